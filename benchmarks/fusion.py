"""Several degraded photos of one monkey, fused into one answer, against the best photo alone.

Each photo of a split becomes a group of 2 or 3 (alternately) copies, each with a different corruption
of `data.corrupt` at a random severity in [SEV_LO, 5]: the same animal photographed again in poor
conditions. Every copy is answered alone (calibrated probabilities and the quality verdict of the
run); the group is answered by
  best photo      the copy the model is surest of (its top probability), as a keeper picking one would,
  any photo       the first copy (what one photo gives on average),
  fused           `sightings.fusion.Fusion`, with its poor-photo weight and strength chosen on the
                  validation split's groups (lowest log loss) and measured on the test split's.
Accuracy and ECE (15 bins) per method on the test split, with the difference to the best photo.

    python benchmarks/fusion.py --run /tmp/base/run --data ../shared/data/monkeys
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from PIL import Image

from monkeysee.data.corrupt import CORRUPTIONS, corrupt
from monkeysee.evaluate.metrics import expected_calibration_error
from monkeysee.predict import Predictor
from monkeysee.rundir import RunDir
from monkeysee.sightings.fusion import POOR_WEIGHT, STRENGTH, Fusion

SEV_LO = 3.0


def answer_groups(predictor: Predictor, samples, seed: int):
    """(probs per copy, good per copy, target) for every group of the split."""
    rng = np.random.default_rng(seed)
    kinds = CORRUPTIONS.names()
    groups = []
    for i, s in enumerate(samples):
        with Image.open(s.path) as im:
            photo = im.convert("RGB")
        photo.thumbnail((512, 512))
        n = 2 + i % 2
        chosen = rng.choice(kinds, size=n, replace=False)
        copies = [corrupt(photo, str(k), float(rng.uniform(SEV_LO, 5.0)), rng) for k in chosen]
        x = predictor.prepare(copies)
        logits = predictor.forward(x).logits.float().cpu().numpy()
        probs = predictor.probabilities(logits)
        good = [predictor.assess(c).ok for c in copies]
        groups.append((probs, good, s.target))
    return groups


def methods(groups, fusion: Fusion):
    best = np.stack([g[0][g[0].max(axis=1).argmax()] for g in groups])
    first = np.stack([g[0][0] for g in groups])
    fused = np.stack([fusion.fuse(g[0], g[1]) for g in groups])
    plain = np.stack([Fusion(1.0, 1.0).fuse(g[0], g[1]) for g in groups])
    return {"best photo": best, "any photo": first, "geometric mean": plain, "fused": fused}


def log_loss(probs, targets) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, 1)).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="/tmp/base/run")
    ap.add_argument("--data", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    run = RunDir(args.run)
    index = run.read_splits(args.data)
    predictor = Predictor.from_run_dir(args.run)
    val = answer_groups(predictor, index.val, args.seed)
    test = answer_groups(predictor, index.test, args.seed + 1)
    vt = np.array([g[2] for g in val])
    grid = itertools.product((0.0, 0.25, 0.5, 0.75, 1.0), (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0))
    scores = {(w, k): log_loss(np.stack([Fusion(w, k).fuse(g[0], g[1]) for g in val]), vt) for w, k in grid}
    w, k = min(scores, key=scores.__getitem__)
    default = scores.get((POOR_WEIGHT, STRENGTH), float("nan"))
    print(f"chosen on {len(val)} validation groups: poor_weight={w}, strength={k} "
          f"(log loss {scores[(w, k)]:.4f}; defaults' {default:.4f})")
    targets = np.array([g[2] for g in test])
    poor = sum(not ok for g in test for ok in g[1])
    print(f"test split: {len(test)} groups, {sum(len(g[1]) for g in test)} photos ({poor} judged poor), "
          f"{Path(args.run)}")
    results = methods(test, Fusion(w, k)) | {"fused (defaults)": methods(test, Fusion())["fused"],
                                             "fused (poor x0.5)": methods(test, Fusion(0.5, k))["fused"]}
    base_acc = (results["best photo"].argmax(1) == targets).mean()
    base_ece = expected_calibration_error(results["best photo"], targets)
    print(f"{'method':<18} {'accuracy':>9} {'vs best':>8} {'ECE':>7} {'vs best':>8} {'log loss':>9}")
    for name, probs in results.items():
        acc = (probs.argmax(1) == targets).mean()
        ece = expected_calibration_error(probs, targets)
        print(f"{name:<18} {acc:>9.2%} {100 * (acc - base_acc):>+7.1f}p {ece:>7.4f} {ece - base_ece:>+8.4f} "
              f"{log_loss(probs, targets):>9.4f}")


if __name__ == "__main__":
    main()
