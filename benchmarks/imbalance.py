"""Long-tailed species lists: does a class-weighted loss help the rare species, and what does it cost?

    python benchmarks/imbalance.py [--data ../shared/data/monkeys] [--out runs/imbalance] [--rarest 5]

Builds a long-tailed copy of the data (symlinks): `--test` photos per species are set aside first as
this benchmark's own test set, never seen by any run; of the rest, species i (in label order) keeps
n * r**i photos, r chosen so the last species keeps `--rarest`. Then trains the default recipe with
each `--class-weights` rule on it (one shared feature store, so later runs encode nothing) and reports,
on the set-aside photos: accuracy, balanced accuracy, macro-F1 and the recall of the three rarest
species, with the photo count of each species' folder and of what the run trained on (the run carves
its own validation and test photos out of the folder). Every figure is measured in this run.
"""

from __future__ import annotations

import argparse
import random
import shutil
import time
from pathlib import Path

import numpy as np

from monkeysee.config import TrainConfig
from monkeysee.data.images import iter_photos, load_rgb
from monkeysee.evaluate.metrics import compute_metrics
from monkeysee.predict import Predictor
from monkeysee.rundir import RunDir
from monkeysee.train.trainer import Trainer

Split = tuple[Path, dict[str, list[Path]], dict[str, int]]


def long_tail(data: Path, out: Path, test: int, rarest: int, seed: int = 0) -> Split:
    """(the long-tailed folder, set-aside test photos per species folder, training photos per species)."""
    root = data / "training" if (data / "training").is_dir() else data
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    tail = out / "long-tail"
    shutil.rmtree(tail, ignore_errors=True)
    (tail / "training").mkdir(parents=True)
    for extra in data.glob("*.txt"):  # the labels file, when there is one
        (tail / extra.name).symlink_to(extra.resolve())
    first = len(list(iter_photos(folders[0]))) - test
    ratio = (rarest / first) ** (1 / max(1, len(folders) - 1))
    held, kept = {}, {}
    for i, folder in enumerate(folders):
        photos = sorted(iter_photos(folder))
        random.Random(f"{seed}-{folder.name}").shuffle(photos)
        held[folder.name] = photos[:test]
        keep = photos[test:][: max(rarest, round(first * ratio**i))]
        (tail / "training" / folder.name).mkdir()
        for p in keep:
            (tail / "training" / folder.name / p.name).symlink_to(p.resolve())
        kept[folder.name] = len(keep)
    return tail, held, kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/monkeys"))
    ap.add_argument("--out", type=Path, default=Path("runs/imbalance"))
    ap.add_argument("--test", type=int, default=25, help="photos per species set aside as the test set")
    ap.add_argument("--rarest", type=int, default=5, help="training photos of the rarest species")
    ap.add_argument("--rules", nargs="+", default=["none", "inverse_sqrt", "inverse"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds; means are shown")
    args = ap.parse_args()
    tail, held, kept = long_tail(args.data, args.out, args.test, args.rarest)
    print("photos per species folder (the run carves its val and test photos out of these): "
          + ", ".join(f"{k} {v}" for k, v in kept.items()))
    store = args.out / "feature-store"
    rare = sorted(kept, key=lambda name: kept[name])[:3]
    for rule in args.rules:
        rows = [evaluate(tail, held, args.out, store, rule, seed, rare) for seed in args.seeds]
        acc, bal, f1, seconds = (float(np.mean([r[i] for r in rows])) for i in range(4))
        rare_recall = np.mean([r[4] for r in rows], axis=0)
        print(f"{rule:>13}: accuracy {acc:.1%}, balanced {bal:.1%}, macro-F1 {f1:.3f}; recall of the 3 "
              f"rarest ({', '.join(f'{n} x{kept[n]}' for n in rare)}) "
              + ", ".join(f"{r:.0%}" for r in rare_recall)
              + f"; mean of seeds {args.seeds}, {seconds:.0f} s per run", flush=True)


def evaluate(tail: Path, held: dict[str, list[Path]], out: Path, store: Path, rule: str, seed: int,
             rare: list[str]) -> tuple[float, float, float, float, list[float]]:
    """Train one run; (accuracy, balanced accuracy, macro-F1, seconds, recall of `rare`) on `held`."""
    run = out / f"weights-{rule}-seed{seed}"
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    cfg = TrainConfig(data=str(tail), out=str(run), store=str(store), class_weights=rule, seed=seed)
    Trainer(cfg, run).run(log=lambda _: None)
    seconds = time.perf_counter() - t0
    predictor = Predictor.from_run_dir(run, assess_quality=False)
    labels = [s.label for s in predictor.species]
    order = [labels.index(name) for name in held]  # a species' label is its folder's name
    photos = [(load_rgb(p), t) for ps, t in zip(held.values(), order, strict=True) for p in ps]
    probs = np.concatenate([  # the calibrated probabilities the answers show, 64 photos per pass
        predictor.probabilities(predictor.logits_and_features(
            predictor.prepare([im for im, _ in photos[start:start + 64]]))[0].numpy())
        for start in range(0, len(photos), 64)])
    m = compute_metrics(probs, np.array([t for _, t in photos]), predictor.species)
    if seed == 0 and rule == "none":
        trained = (RunDir(run).read_summary() or {})["counts"]["train"]
        print("photos the seed-0 run trained on: " + ", ".join(f"{k} {trained[k]}" for k in held))
    recall = {s["label"]: s["recall"] for s in m["per_species"]}
    return m["accuracy"], m["balanced_accuracy"], m["macro_f1"], seconds, [recall[n] for n in rare]

if __name__ == "__main__":
    main()
