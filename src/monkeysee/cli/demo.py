"""`monkeysee demo`: the main job in one command.

With `--data DIR`: train, evaluate on the held-out photos, predict a few, explain one, and say where
everything is. Without data: show something real that needs no download (the bundled ImageNet
EfficientNet-Lite0 names what it sees in photos that scikit-image ships, with a Grad-CAM of each).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from monkeysee.cli import command
from monkeysee.cli.outputs import check_folder, declare_outputs

DATA_HELP = (
    "To train on monkeys, get the Kaggle '10 Monkey Species' data set (folders training/n0..n9 and "
    "monkey_labels.txt) and run: monkeysee demo --data PATH/TO/10-monkey-species"
)
SAMPLE_PHOTOS = ("chelsea", "astronaut", "coffee", "rocket")


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="data folder to train on; without it, an ImageNet demo that needs no data")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    declare_outputs(p, out=check_folder)


@command("demo", help="Run the main job: train+evaluate+predict on --data, or an offline ImageNet demo",
         arguments=_arguments, order=0)
def run(args: argparse.Namespace) -> int:
    return _with_data(args) if args.data else _imagenet(Path(args.out))


def _imagenet(out: Path) -> int:
    import numpy as np
    import skimage.data
    from PIL import Image
    from torchvision.models import ResNet18_Weights

    from monkeysee.explain import DEFAULT_METHOD, Explainer
    from monkeysee.explain.render import save_png
    from monkeysee.models import create_model, get_backbone

    names = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]  # the 1000 ImageNet class names
    spec = get_backbone("efficientnet_lite0")
    model = create_model(spec.name, pretrained=True).eval()
    explainer = Explainer(model, spec.preprocess, layer=spec.explain_layer)
    photos = [Image.fromarray(np.asarray(getattr(skimage.data, n)())).convert("RGB") for n in SAMPLE_PHOTOS]
    x, seen = explainer.prepare(photos)
    answer, results = explainer.explain_prepared(x, seen, (DEFAULT_METHOD,))  # one pass: answer + heatmap
    probs = answer.logits.softmax(1)
    out.mkdir(parents=True, exist_ok=True)
    print(f"No --data given: the bundled ImageNet {spec.name} ({spec.weights_source}) names what it sees\n"
          "in photos that scikit-image ships, and Grad-CAM shows where it looked.\n")
    cams = results[DEFAULT_METHOD].overlays()
    for name, p, cam in zip(SAMPLE_PHOTOS, probs, cams, strict=True):
        top = p.topk(3)
        guesses = ", ".join(f"{names[i]} {v:.1%}" for v, i in zip(top.values.tolist(), top.indices.tolist(),
                                                                   strict=True))
        path = save_png(cam, out / f"{name}.{DEFAULT_METHOD}.png")
        print(f"  {name:<10} {guesses}\n  {'':<10} heatmap: {path}")
    print(f"\n{DATA_HELP}")
    return 0


def _with_data(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from monkeysee.config import TrainConfig
    from monkeysee.evaluate.runner import evaluate_run
    from monkeysee.explain import DEFAULT_METHOD, Explainer
    from monkeysee.explain.render import save_png
    from monkeysee.predict import Predictor
    from monkeysee.rundir import CURVES, MANIFEST, WEIGHTS, RunDir
    from monkeysee.train.trainer import Trainer

    out = Path(args.out)
    run_dir = Trainer(TrainConfig(data=args.data, out=str(out)), out).run(log=tqdm.write)
    predictor = Predictor.from_run_dir(run_dir)
    evaluate_run(run_dir, "test", predictor=predictor)
    run = RunDir(run_dir)
    test = run.read_splits().test
    examples = [next(s.path for s in test if s.target == t) for t in sorted({s.target for s in test})][:4]
    print("\nA few held-out photos:")
    explainer = Explainer.from_run(predictor.run, precision=predictor.precision)
    preds = list(predictor.predict_paths(examples, heatmaps=explainer))
    for pred in preds:
        print("  " + pred.line())
    assert preds[0].overlay is not None
    cam_path = save_png(preds[0].overlay, run_dir / f"demo-{DEFAULT_METHOD}.png")
    print(f"\nrun folder: {run_dir}"
          f"\n  checkpoint: {run.file(MANIFEST)}, {run.file(WEIGHTS)}"
          f"\n  curves: {run.file(CURVES)}\n  evaluation: {run.eval_dir('test')}"
          f"\n  {DEFAULT_METHOD} of {examples[0].name}: {cam_path}")
    return 0
