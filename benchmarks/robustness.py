"""Photos from the wild: accuracy, "not one of my species" and "take another photo" rates on corrupted
held-out monkey photos, for the default run beside the same recipe without this work (the old
augmentations, no temperature, the validation-only unknown threshold), trained in the same run.

    python benchmarks/robustness.py [--data ../shared/data/monkeys] [--ood ../shared/data/not-monkeys]
                                    [--out runs/robustness] [--severities 3 5] [--tta hflip hflip+zoom]
                                    [--views N ...] [--unfreeze N ...] [--add-op bars ...]
                                    [--backbone efficientnet_lite2 ...]

Both runs use the same seed, so their held-out test split (never used for training, epochs, the
threshold or the temperature) is the same photos. The default run is also evaluated with test-time
augmentation (`--tta`: mean logits over the photo and its mirror image, or those and a 1.14x zoom),
with the time it adds. Prints one table with a column per variant and the acceptance lines.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from monkeysee.config import TrainConfig
from monkeysee.data.augment import DEFAULT_OPS, GEOMETRY_AND_COLOUR_OPS, AugmentConfig
from monkeysee.data.corrupt import CORRUPTIONS, REFERENCE_POINTS
from monkeysee.data.images import iter_photos, load_rgb
from monkeysee.evaluate.metrics import expected_calibration_error
from monkeysee.predict import Predictor
from monkeysee.rundir import RunDir
from monkeysee.train.trainer import Trainer

BASELINE = {"augment": AugmentConfig(ops=GEOMETRY_AND_COLOUR_OPS), "calibration": "none",
            "unknown_calibration": "val"}


def train(name: str, data: str, out: Path, **changes: object) -> tuple[Path, float]:
    run = out / name
    if RunDir(run).is_finished():
        return run, float("nan")
    t0 = time.perf_counter()
    cfg = TrainConfig(data=data, out=str(run)).updated(**changes)
    Trainer(cfg, run).run(log=lambda _: None)
    return run, time.perf_counter() - t0


def rows(run: Path, ood: Path | None, severities: list[float], quality: bool,
         tta: tuple[str, ...] = ()) -> list[tuple[str, float, float, float]]:
    """(condition, accuracy, share called unknown, share asked to retake) per corruption setting."""
    predictor = Predictor.from_run_dir(run, assess_quality=quality, tta=tta)
    test = RunDir(run).read_splits().test
    photos = [load_rgb(s.path) for s in test]
    targets = np.array([s.target for s in test])
    rng = np.random.default_rng(0)
    settings = [("clean", None, 0.0)]
    settings += [(f"{p.label}", p.kind, p.severity) for p in REFERENCE_POINTS]
    settings += [(f"{kind} s{sev:g}", kind, sev) for kind in CORRUPTIONS.names() for sev in severities
                 if not any(p.kind == kind and p.severity == sev for p in REFERENCE_POINTS)]
    out = []
    for label, kind, severity in settings:
        images = photos if kind is None else [CORRUPTIONS.get(kind)(im, severity, rng) for im in photos]
        preds = predictor.predict_images(images, top_k=1)
        guess = np.array([p.best.index for p in preds])
        out.append((label, float((guess == targets).mean()), float(np.mean([p.unknown for p in preds])),
                    float(np.mean([p.retake for p in preds]))))
    if ood is not None:
        others = [load_rgb(p) for p in iter_photos(ood)]  # never used to choose anything
        preds = [p for start in range(0, len(others), 32)
                 for p in predictor.predict_images(others[start:start + 32], top_k=1)]
        out.append(("OTHER ANIMALS (rejected)", float("nan"), float(np.mean([p.unknown for p in preds])),
                    float(np.mean([p.retake for p in preds]))))
    return out


def ece(run: Path, tta: tuple[str, ...] = ()) -> float:
    predictor = Predictor.from_run_dir(run, assess_quality=False, tta=tta)
    test = RunDir(run).read_splits().test
    preds = predictor.predict_images([load_rgb(s.path) for s in test], top_k=len(predictor.species))
    probs = np.zeros((len(test), len(predictor.species)))
    for i, p in enumerate(preds):
        for g in p.top:
            probs[i, g.index] = g.probability
    targets = np.array([s.target for s in test])
    return expected_calibration_error(probs, targets)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/monkeys")
    ap.add_argument("--ood", default="../shared/data/not-monkeys")
    ap.add_argument("--out", type=Path, default=Path("runs/robustness"))
    ap.add_argument("--severities", type=float, nargs="+", default=[3.0, 5.0])
    ap.add_argument("--views", type=int, nargs="*", default=[], help="also train the default with --views N")
    ap.add_argument("--unfreeze", type=int, nargs="*", default=[],
                    help="also train the default fine-tuning the top N stages (default recipe: 2)")
    ap.add_argument("--add-op", nargs="*", default=[], metavar="OP",
                    help="also train the default with this augmentation added to its ops (e.g. bars)")
    ap.add_argument("--backbone", nargs="*", default=[], help="also train the default on this backbone")
    ap.add_argument("--tta", nargs="*", default=["hflip", "hflip+zoom"],
                    help="also evaluate the default run with these test-time views ('+' joins views)")
    args = ap.parse_args()
    ood = Path(args.ood) if Path(args.ood).is_dir() else None
    Image.init()
    results = {}
    variants: list[tuple[str, str, dict[str, object], bool, tuple[str, ...]]] = [
        ("baseline", "baseline", BASELINE, False, ()), ("default", "default", {}, True, ())]
    variants += [(f"default tta {t}", "default", {}, True, tuple(t.split("+"))) for t in args.tta]
    variants += [(f"default-views{v}", f"default-views{v}", {"views": v}, True, ()) for v in args.views]
    variants += [(f"default-unfreeze{n}", f"default-unfreeze{n}", {"unfreeze": n}, True, ())
                 for n in args.unfreeze]
    variants += [(f"default+{op}", f"default-plus-{op}", {"augment": AugmentConfig(ops=(*DEFAULT_OPS, op))},
                  True, ()) for op in args.add_op]
    variants += [(f"default-{b}", f"default-{b}", {"backbone": b}, True, ()) for b in args.backbone]
    for column, name, changes, quality, tta in variants:
        run, seconds = train(name, args.data, args.out, **changes)
        t0 = time.perf_counter()
        table = rows(run, ood, args.severities, quality, tta)
        results[column] = (table, ece(run, tta), seconds, time.perf_counter() - t0)
    names = list(results)
    print(f"{'condition (acc / unknown / retake)':<34}" + "".join(f"{n:>26}" for n in names))
    for i, (label, *_) in enumerate(results["baseline"][0]):
        cells = "".join(f"{results[n][0][i][1]:>10.1%}{results[n][0][i][2]:>8.1%}{results[n][0][i][3]:>8.1%}"
                        for n in names)
        print(f"{label:<34}{cells}")
    base_eval = results["default"][3]
    for name, (_, e, seconds, eval_s) in results.items():
        print(f"{name}: held-out ECE {e:.1%}; training {seconds:.0f} s (nan = reused); predicting the "
              f"table {eval_s:.0f} s ({eval_s / base_eval:.2f}x the default's)")
    for name, (table, *_) in results.items():
        ref = [r for r in table if any(r[0] == p.label for p in REFERENCE_POINTS)]
        print(f"{name}: mean accuracy over the reference corruptions {np.mean([r[1] for r in ref]):.1%}, "
              f"lowest {min(r[1] for r in ref):.1%}; 'not one of my species' on them at most "
              f"{max(r[2] for r in ref):.1%}; clean accuracy {table[0][1]:.1%}, kept {1 - table[0][2]:.1%}")


if __name__ == "__main__":
    main()
