"""Photos from the wild: accuracy, "not one of my species" and "take another photo" rates on corrupted
held-out monkey photos, for the default run beside the same recipe without this work (the old
augmentations, no temperature, the validation-only unknown threshold), trained in the same run.

    python benchmarks/robustness.py [--data ../shared/data/monkeys] [--ood ../shared/data/not-monkeys]
                                    [--out runs/robustness] [--severities 3 5]

Both runs use the same seed, so their held-out test split (never used for training, epochs, the
threshold or the temperature) is the same photos. Prints one table per run and the acceptance lines.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from monkeysee.config import TrainConfig
from monkeysee.data.augment import GEOMETRY_AND_COLOUR_OPS, AugmentConfig
from monkeysee.data.corrupt import CORRUPTIONS, ISSUE_POINTS
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


def rows(run: Path, ood: Path | None, severities: list[float],
         quality: bool) -> list[tuple[str, float, float, float]]:
    """(condition, accuracy, share called unknown, share asked to retake) per corruption setting."""
    predictor = Predictor.from_run_dir(run, assess_quality=quality)
    test = RunDir(run).read_splits().test
    photos = [load_rgb(s.path) for s in test]
    targets = np.array([s.target for s in test])
    rng = np.random.default_rng(0)
    settings = [("clean", None, 0.0)]
    settings += [(f"{p.label}", p.kind, p.severity) for p in ISSUE_POINTS]
    settings += [(f"{kind} s{sev:g}", kind, sev) for kind in CORRUPTIONS.names() for sev in severities
                 if not any(p.kind == kind and p.severity == sev for p in ISSUE_POINTS)]
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


def ece(run: Path) -> float:
    predictor = Predictor.from_run_dir(run)
    test = RunDir(run).read_splits().test
    x = predictor.prepare([load_rgb(s.path) for s in test])
    logits, _ = predictor.logits_and_features(x)
    targets = np.array([s.target for s in test])
    return expected_calibration_error(predictor.probabilities(logits.numpy()), targets)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/monkeys")
    ap.add_argument("--ood", default="../shared/data/not-monkeys")
    ap.add_argument("--out", type=Path, default=Path("runs/robustness"))
    ap.add_argument("--severities", type=float, nargs="+", default=[3.0, 5.0])
    ap.add_argument("--views", type=int, nargs="*", default=[], help="also train the default with --views N")
    args = ap.parse_args()
    ood = Path(args.ood) if Path(args.ood).is_dir() else None
    Image.init()
    results = {}
    variants = [("baseline", BASELINE, False), ("default", {}, True)]
    variants += [(f"default-views{v}", {"views": v}, True) for v in args.views]
    for name, changes, quality in variants:
        run, seconds = train(name, args.data, args.out, **changes)
        table = rows(run, ood, args.severities, quality)
        results[name] = (table, ece(run), seconds)
    names = list(results)
    print(f"{'condition (acc / unknown / retake)':<34}" + "".join(f"{n:>26}" for n in names))
    for i, (label, *_) in enumerate(results["baseline"][0]):
        cells = "".join(f"{results[n][0][i][1]:>10.1%}{results[n][0][i][2]:>8.1%}{results[n][0][i][3]:>8.1%}"
                        for n in names)
        print(f"{label:<34}{cells}")
    new = results["default"][0]
    for name, (_, e, seconds) in results.items():
        print(f"{name}: held-out ECE {e:.1%}; training {seconds:.0f} s (nan = reused)")
    issue = [r for r in new if any(r[0] == p.label for p in ISSUE_POINTS)]
    print(f"default: mean accuracy over the issue's corruptions {np.mean([r[1] for r in issue]):.1%}, "
          f"lowest {min(r[1] for r in issue):.1%}; 'not one of my species' on them at most "
          f"{max(r[2] for r in issue):.1%}; clean kept {1 - new[0][2]:.1%}")


if __name__ == "__main__":
    main()
