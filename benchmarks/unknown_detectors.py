"""Which "not one of my species" detector to ship: each one fitted on a trained run's training photos,
its threshold calibrated on the validation split (keep 95% of known photos), then measured on photos
it never saw: the run's held-out test split (known species) against a folder of other animals and the
held-out half of a folder of other primates (every other photo by file name; the other half is the
tuning half, reported beside it and never called held-out).

    python benchmarks/unknown_detectors.py RUN_DIR [--ood ../shared/data/not-monkeys]
                                           [--primates ../shared/data/other-primates] [--keep 0.95]

Prints AUROC, the share of other-animal photos rejected, of other primates rejected (held-out and tuning
halves) and of held-out monkeys kept, per detector.

Every detector is fitted here on view 0 of the training photos, so `knn_either`'s views route holds the
clean photos too and its two thresholds are not calibrated apart; as training fits it (all stored views,
out-of-fold thresholds) it is measured by `benchmarks/trust.py` and in the README.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from monkeysee.data.images import iter_photos
from monkeysee.data.layout import Sample
from monkeysee.evaluate.runner import predict_samples, split_samples
from monkeysee.models.unknown import DETECTORS, auroc, build_detector
from monkeysee.models.unknown_imagenet import imagenet_head
from monkeysee.predict import Predictor
from monkeysee.runtime import tune_malloc

REPO = Path(__file__).resolve().parents[1]


def logits_feats(predictor: Predictor, samples: list[Sample]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    logits, feats, kept, _ = predict_samples(predictor, samples)
    return logits, feats, np.array([samples[i].target for i in kept])


def main() -> None:
    tune_malloc()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--ood", type=Path, default=REPO.parent / "shared" / "data" / "not-monkeys")
    ap.add_argument("--primates", type=Path, default=REPO.parent / "shared" / "data" / "other-primates")
    ap.add_argument("--keep", type=float, default=0.95)
    ap.add_argument("--json", type=Path, help="also write the table as JSON")
    args = ap.parse_args()

    predictor = Predictor.from_run_dir(args.run_dir)
    t0 = time.perf_counter()
    data = {name: logits_feats(predictor, split_samples(args.run_dir, name, None, predictor))
            for name in ("train", "val", "test")}
    ood_l, ood_f, _ = logits_feats(predictor, [Sample(p, 0) for p in iter_photos(args.ood)])
    primates = sorted(iter_photos(args.primates))
    halves = {"held-out": primates[1::2], "tuning": primates[::2]}
    prim = {h: logits_feats(predictor, [Sample(p, 0) for p in paths])[:2] for h, paths in halves.items()}
    head = imagenet_head(predictor.run.manifest.backbone)
    print(f"features of {sum(len(v[2]) for v in data.values())} monkey and {len(ood_l)} other photos "
          f"in {time.perf_counter() - t0:.1f}s\n")
    rows = []
    for name in DETECTORS:
        extra = {"imagenet": head} if DETECTORS[name].wants_imagenet_head else {}
        det = build_detector(name, data["train"][1], data["train"][2], data["val"][0], data["val"][1],
                             keep=args.keep, **extra)
        known = det.score(data["test"][0], data["test"][1])
        other = det.score(ood_l, ood_f)
        rejected = {h: float((det.score(*lf) > det.threshold).mean()) for h, lf in prim.items()}
        rows.append({"detector": name, "auroc": auroc(known, other),
                     "other_rejected": float((other > det.threshold).mean()),
                     "primates_rejected": rejected["held-out"],
                     "primates_tuning_rejected": rejected["tuning"],
                     "known_kept": float((known <= det.threshold).mean())})
    print(f"{'detector':<13} {'AUROC':>7} {'others rejected':>16} {'primates rejected (tuning)':>27} "
          f"{'held-out monkeys kept':>22}")
    for r in sorted(rows, key=lambda r: -r["auroc"]):
        shown = f"{r['primates_rejected']:.1%} ({r['primates_tuning_rejected']:.1%})"
        print(f"{r['detector']:<13} {r['auroc']:>7.4f} {r['other_rejected']:>16.1%} {shown:>27} "
              f"{r['known_kept']:>22.1%}")
    print(f"\nthreshold calibrated on the validation split to keep {args.keep:.0%} of known photos; "
          f"known = {len(data['test'][2])} held-out test photos, others = {len(ood_l)} photos of {args.ood}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
