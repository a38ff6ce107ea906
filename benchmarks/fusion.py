"""Several degraded photos of one monkey, fused into one answer, against the best photo alone.

Groups of 2 or 3 (alternately) degraded photos of one monkey, each photo under a corruption of
`data.corrupt` at a random severity in [LO, HI] of `--severity` (default 3 to 5): the same animal
photographed again in poor conditions. They are made in one of two ways (`--groups`):
  copies   each photo of the split is one group of copies, each copy with a different corruption:
           the same shot again (the hardest case for fusion: the copies share every mistake of the shot);
  photos   the split's distinct photos of one species, shuffled and cut into groups (the set has no
           several photos of one individual, so photos of one species stand in for them).
Every photo is answered alone (calibrated probabilities and the quality verdict of the
run); the group is answered by
  best photo      the photo the model is surest of (its top probability), as a keeper picking one would,
  clearest photo  the photo with the fewest quality problems (the first of equals), as a keeper picking
                  the clearest would,
  any photo       the first photo (what one photo gives on average),
  fused           `sightings.fusion.Fusion`, with its poor-photo weight and strength chosen on the
                  validation split's groups (lowest log loss) and measured on the test split's.
Accuracy and ECE (15 bins) per method on the test split, with the difference to the best photo, after
the ceiling: how often some photo of the group is right, the most that picking one photo could give.
`--repeats N` draws the groups (and corruptions) N times, for more groups than the split has photos.

    python benchmarks/fusion.py --run RUN --data ../shared/data/monkeys [--groups photos] [--repeats 10]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from PIL import Image

from monkeysee.data.corrupt import CORRUPTIONS, corrupt
from monkeysee.data.images import load_rgb
from monkeysee.evaluate.metrics import expected_calibration_error
from monkeysee.predict import Predictor
from monkeysee.rundir import RunDir
from monkeysee.sightings.fusion import POOR_WEIGHT, STRENGTH, Fusion


def photo_groups(samples, rng: np.random.Generator, kind: str) -> list[list]:
    """Groups of samples of one monkey: copies of each sample, or the distinct photos of each species."""
    if kind == "copies":
        return [[s] * (2 + i % 2) for i, s in enumerate(samples)]
    groups: list[list] = []
    for target in sorted({s.target for s in samples}):
        same = [samples[j] for j in rng.permutation(len(samples)) if samples[j].target == target]
        while len(same) >= 2:
            n = 3 if len(groups) % 2 and len(same) != 4 else 2  # 2, 3, 2, ...; never leave one photo over
            groups.append(same[:n])
            same = same[n:]
    return groups


def load(path: Path) -> Image.Image:
    photo = load_rgb(path)
    photo.thumbnail((512, 512))
    return photo


def answer_groups(predictor: Predictor, samples, seed: int, kind: str = "copies", repeats: int = 1,
                  severity: tuple[float, float] = (3.0, 5.0)):
    """(probs per photo, good per photo, target, clearest photo) for every group of the split, drawn
    `repeats` times (new groups and corruptions each time)."""
    rng = np.random.default_rng(seed)
    kinds = CORRUPTIONS.names()
    groups = []
    for members in itertools.chain.from_iterable(photo_groups(samples, rng, kind) for _ in range(repeats)):
        chosen = rng.choice(kinds, size=len(members), replace=False)
        photos = {s.path: load(s.path) for s in members}  # a group of copies reads its photo once
        copies = [corrupt(photos[s.path], str(k), float(rng.uniform(*severity)), rng)
                  for s, k in zip(members, chosen, strict=True)]
        x = predictor.prepare(copies)
        logits = predictor.forward(x).logits.float().cpu().numpy()
        probs = predictor.probabilities(logits)
        checks = [predictor.assess(c) for c in copies]
        clearest = min(range(len(checks)), key=lambda j: (len(checks[j].problems), j))
        groups.append((probs, [q.ok for q in checks], members[0].target, clearest))
    return groups


def fuse_all(groups, fusion: Fusion) -> np.ndarray:
    return np.stack([fusion.fuse(g[0], g[1]) for g in groups])


def methods(groups, fusion: Fusion):
    best = np.stack([g[0][g[0].max(axis=1).argmax()] for g in groups])
    first = np.stack([g[0][0] for g in groups])
    clearest = np.stack([g[0][g[3]] for g in groups])
    fused = fuse_all(groups, fusion)
    plain = fuse_all(groups, Fusion(1.0, 1.0))
    return {"best photo": best, "clearest photo": clearest, "any photo": first, "geometric mean": plain,
            "fused": fused}


def log_loss(probs, targets) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, 1)).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="/tmp/base/run")
    ap.add_argument("--data", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--groups", choices=("copies", "photos"), default="copies")
    ap.add_argument("--repeats", type=int, default=1, help="draw the groups this many times")
    ap.add_argument("--severity", type=float, nargs=2, default=(3.0, 5.0), metavar=("LO", "HI"))
    args = ap.parse_args()
    run = RunDir(args.run)
    index = run.read_splits(args.data)
    predictor = Predictor.from_run_dir(args.run)
    val = answer_groups(predictor, index.val, args.seed, args.groups, args.repeats, args.severity)
    test = answer_groups(predictor, index.test, args.seed + 1, args.groups, args.repeats, args.severity)
    vt = np.array([g[2] for g in val])
    grid = itertools.product((0.0, 0.25, 0.5, 0.75, 1.0), (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0))
    scores = {(w, k): log_loss(fuse_all(val, Fusion(w, k)), vt) for w, k in grid}
    w, k = min(scores, key=scores.__getitem__)
    default = scores.get((POOR_WEIGHT, STRENGTH), float("nan"))
    print(f"chosen on {len(val)} validation groups: poor_weight={w}, strength={k} "
          f"(log loss {scores[(w, k)]:.4f}; defaults' {default:.4f})")
    targets = np.array([g[2] for g in test])
    poor = sum(not ok for g in test for ok in g[1])
    photos = sum(len(g[1]) for g in test)
    print(f"test split: {len(test)} groups of {args.groups}, {photos} photos ({poor} judged poor), "
          f"{Path(args.run)}")
    results = methods(test, Fusion(w, k)) | {"fused (defaults)": fuse_all(test, Fusion()),
                                             "fused (poor x0.5)": fuse_all(test, Fusion(0.5, k))}
    ceiling = np.mean([(np.asarray(g[0]).argmax(1) == g[2]).any() for g in test])
    print(f"some photo of the group right: {ceiling:.2%} (the most that picking one photo could give)")
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
