"""`monkeysee explain`: class activation maps for photos, or a faithfulness comparison of the methods."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from monkeysee.cli import command
from monkeysee.cli.outputs import check_folder, declare_outputs

if TYPE_CHECKING:
    from PIL import Image

    from monkeysee.predict import Predictor
    from monkeysee.rundir import LoadedRun

DEFAULT_OUT = "explanations"


def _arguments(p: argparse.ArgumentParser) -> None:
    from monkeysee.explain import method_names

    methods = "|".join([*method_names(), "all"])
    p.add_argument("run_dir", type=Path, help="run folder written by `monkeysee train`")
    p.add_argument("photos", nargs="*", type=Path, help="photos to explain")
    p.add_argument(
        "--method",
        dest="methods",
        action="append",
        metavar="METHOD",
        help=f"{methods}; repeat it or separate with commas (default: gradcam; with --evaluate: all)",
    )
    p.add_argument(
        "--methods",
        dest="methods",
        action="extend",
        nargs="+",
        metavar="METHOD",
        help="several methods at once, e.g. --methods gradcam scorecam",
    )
    p.add_argument(
        "--species",
        default=None,
        help="species to explain: common or Latin name, label or index (default: the prediction)",
    )
    p.add_argument(
        "--layer",
        default=None,
        help="dotted module name to explain (default: the run's explain layer, e.g. body.head)",
    )
    p.add_argument(
        "--out", type=Path, default=Path(DEFAULT_OUT), help=f"output folder (default: {DEFAULT_OUT})"
    )
    declare_outputs(p, out=check_folder)
    p.add_argument(
        "--alpha", type=float, default=0.5, help="opacity of the map over the photo, 0-1 (default: 0.5)"
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--cmap", default="inferno", help="matplotlib colormap (default: inferno)")
    p.add_argument("--batch-size", type=int, default=8, help="photos per forward pass (default: 8)")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=32,
        help="perturbed copies per pass for scorecam/ablationcam; bounds memory (default: 32)",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="arithmetic of the model passes: auto = bf16 where the CPU/GPU has it (maps are formed in "
        "float32 either way), bf16 or fp32 (default: auto)",
    )
    g = p.add_argument_group("faithfulness evaluation")
    g.add_argument(
        "--evaluate",
        action="store_true",
        help="compare the methods' faithfulness on held-out photos instead of explaining PHOTOs",
    )
    g.add_argument(
        "--data",
        type=Path,
        default=None,
        help="photos to evaluate on when the run has no splits.json (folder or Kaggle layout)",
    )
    g.add_argument("--n", type=int, default=16, help="number of photos, spread over classes (default: 16)")
    g.add_argument("--steps", type=int, default=16, help="deletion/insertion steps (default: 16)")


@command(
    "explain",
    help="Show what the CNN looks at: CAM overlays, or --evaluate their faithfulness.",
    arguments=_arguments,
    order=40,
)
def run(args: argparse.Namespace) -> int:
    from monkeysee.errors import ConfigError
    from monkeysee.rundir import load_run

    if not 0.0 <= args.alpha <= 1.0:
        raise ConfigError(f"--alpha must be between 0 and 1, not {args.alpha}", fix="pass e.g. --alpha 0.5")
    if args.batch_size < 1 or args.chunk_size < 1:
        raise ConfigError("--batch-size and --chunk-size must be at least 1", fix="pass e.g. --batch-size 8")
    from monkeysee.runtime import pick_device

    loaded = load_run(args.run_dir, device=pick_device(args.device))
    if args.evaluate:
        return _evaluate(args, loaded)
    if not args.photos:
        raise ConfigError(
            "no photos given", fix="pass one or more photo paths after the run folder, or --evaluate"
        )
    return _explain(args, loaded)


def _explain(args: argparse.Namespace, loaded: LoadedRun) -> int:
    from monkeysee.data.images import load_rgb
    from monkeysee.explain import DEFAULT_METHOD, Explainer, photo_names, resolve_methods
    from monkeysee.explain.render import save_figure, side_by_side
    from monkeysee.explain.result import CamResult, file_safe

    methods = resolve_methods(args.methods or [DEFAULT_METHOD])
    explainer = Explainer.from_run(loaded, layer=args.layer, precision=args.precision)
    target = explainer.target(args.species)  # a bad name fails before any photo is read
    names = photo_names(args.photos)
    evidence = _evidence_predictor(loaded, args.precision)
    parts: dict[str, list[CamResult]] = {m: [] for m in methods}
    for start in range(0, len(args.photos), args.batch_size):
        paths = args.photos[start : start + args.batch_size]
        photos = [load_rgb(p, preprocess=explainer.preprocess) for p in paths]
        batch = explainer.explain(
            photos, methods, target, names[start : start + args.batch_size], chunk_size=args.chunk_size
        )
        for m in methods:
            parts[m].append(batch[m])
        if evidence is not None:
            _write_evidence(evidence, photos, names[start : start + args.batch_size], args.out)
    results = {m: CamResult.concat(parts[m]) for m in methods}
    for res in results.values():
        res.save(args.out, alpha=args.alpha, cmap=args.cmap)
    first = results[methods[0]]
    for i, name in enumerate(first.names):
        predicted = explainer.class_names[first.predicted_indices[i]] if explainer.class_names else ""
        print(
            f"{name}: explaining {first.target_names[i]} (p={first.target_probabilities[i]:.3f}; "
            f"predicted {predicted}) at layer {first.layer}, {first.precision} passes"
        )
        if len(methods) > 1:
            overlays = {results[m].method: results[m].overlays(args.alpha, args.cmap)[i] for m in methods}
            titled = {_title(m): pic for m, pic in overlays.items()}
            assert first.images is not None
            fig = side_by_side(first.images[i], titled, title=f"{name}: {first.target_names[i]}")
            save_figure(fig, args.out / f"{file_safe(name)}__all.png")
    print(f"wrote {len(first) * len(methods)} overlays with .npy maps and JSON manifests to {args.out}")
    return 0


def _evidence_predictor(loaded: LoadedRun, precision: str) -> Predictor | None:
    """A predictor for the answer's evidence, where the run has an evidence bank."""
    from monkeysee.predict import Predictor
    from monkeysee.rundir import RunDir

    if not RunDir(loaded.directory).has_evidence(loaded.manifest):
        return None
    return Predictor(loaded, precision=precision, channels_last=False, assess_quality=False)


def _write_evidence(predictor: Predictor, photos: list[Image.Image], names: list[str], out: Path) -> None:
    """Print each photo's answer with its evidence, and draw it: NAME__evidence.png, the photo beside
    the nearest training photos of the answer and of the runner-up."""
    import io

    import numpy as np
    from PIL import Image as PILImage

    from monkeysee.explain.render import evidence_grid, save_figure
    from monkeysee.explain.result import file_safe

    assert predictor.evidence is not None
    thumbs = predictor.evidence.thumbnails
    for pred, photo, name in zip(predictor.predict_images(photos, 2, names), photos, names, strict=True):
        assert pred.evidence is not None
        print(f"{pred.line()}\n  {pred.evidence.line()}")
        rows = [(s.species.display_name,
                 [(np.asarray(PILImage.open(io.BytesIO(thumbs.read(n.row))).convert("RGB")),
                   f"#{n.row} {n.similarity:.2f}") for n in s.nearest])
                for s in pred.evidence.species]
        title = f"{name}: {pred.best.species.display_name if pred.best else ''}"
        if pred.evidence.check:
            title += f" - CHECK THIS ONE (nearest photos: {pred.evidence.vote_species.display_name})"
        save_figure(evidence_grid(np.asarray(photo), rows, title), out / f"{file_safe(name)}__evidence.png")


def _title(method: str) -> str:
    from monkeysee.explain import METHODS

    return METHODS[method].title


def _evaluate(args: argparse.Namespace, loaded: LoadedRun) -> int:
    from monkeysee.errors import ConfigError
    from monkeysee.explain import Explainer
    from monkeysee.explain.faithfulness import faithfulness_on_photos
    from monkeysee.explain.photos import candidate_photos

    if args.n < 1:
        raise ConfigError(f"--n must be at least 1, not {args.n}", fix="pass e.g. --n 16")
    explainer = Explainer.from_run(loaded, layer=args.layer, precision=args.precision)
    candidates, source = candidate_photos(args.run_dir, args.data)
    report, chosen = faithfulness_on_photos(
        explainer, candidates, args.n, args.methods or "all", steps=args.steps, batch_size=args.batch_size,
        chunk_size=args.chunk_size, precision=explainer.precision,
        skipped=lambda exc: print(f"skipping {exc.message}", file=sys.stderr))
    if not chosen:
        raise ConfigError(f"no readable photos in {source}", fix="pass --data DIR with photos")
    print(f"evaluated on {len(chosen)} photos from {source}")
    print(report.table())
    path = report.save(args.out, {"photos": [str(p) for p in chosen], "source": source})
    print(f"wrote {path}")
    return 0
