"""Hundreds of species: the default train at scale, memory against photo count, growing a run.

    python benchmarks/scale.py train  [--data ../shared/data/butterflies] [--out runs/scale]
    python benchmarks/scale.py memory [--data ../shared/data/butterflies] [--sizes 1000 3000 10000]
    python benchmarks/scale.py grow   [--data ../shared/data/butterflies] [--old 90]

`train`: wall time, peak RSS and held-out accuracy of `monkeysee train` with default settings.
`memory`: encoding N photos into a fresh feature store, one process per N: seconds per photo and peak
RSS, which should stay flat while time grows linearly.
`grow`: a run on the first `--old` species, then `train --from` it on all of them, against a full
retrain on all of them with an empty store; time and accuracy on the old and the new species.
Every figure is measured in this run, each command in a fresh process (peak RSS from getrusage).
Serve latency at 100 species: `python benchmarks/serve_latency.py --run RUN` on the `train` run.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

MONKEYSEE = [sys.executable, "-m", "monkeysee"]


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and the child's peak RSS in GB (ru_maxrss of the largest child so far)."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6


def accuracy(run_dir: Path, species: set[str] | None = None) -> tuple[float, int]:
    """Held-out test accuracy of a run, optionally only over photos of `species` (labels)."""
    import numpy as np

    from monkeysee.evaluate.interpret import Interpretation
    from monkeysee.rundir import RunDir

    interp = Interpretation.load(RunDir(run_dir).eval_dir("test") / "predictions")
    labels = [s.label for s in interp.species]
    keep = np.array([species is None or labels[t] in species for t in interp.targets])
    return float((interp.preds[keep] == interp.targets[keep]).mean()), int(keep.sum())


def part_train(args: argparse.Namespace) -> None:
    out = args.out / "train"
    shutil.rmtree(out, ignore_errors=True)
    seconds, rss = run([*MONKEYSEE, "train", "--data", str(args.data), "--out", str(out)])
    acc, n = accuracy(out)
    print(f"default train on {args.data}: {seconds:.0f} s wall, peak RSS {rss:.2f} GB, "
          f"held-out accuracy {acc:.2%} on {n} photos")


def part_memory(args: argparse.Namespace) -> None:
    code = (
        "import sys, time, resource; from pathlib import Path\n"
        "from monkeysee.data.images import iter_photos\n"
        "from monkeysee.data.layout import Sample\n"
        "from monkeysee.data.transforms import eval_transform\n"
        "from monkeysee.models import create_model, get_backbone\n"
        "from monkeysee.runtime import resolve_precision\n"
        "from monkeysee.train.encode import encode_into\n"
        "from monkeysee.train.store import FeatureStore, StoreKey\n"
        "n, data, root = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])\n"
        "photos = sorted(iter_photos(data))[:n]\n"
        "spec = get_backbone('efficientnet_lite0'); model = create_model(spec.name, 10, pretrained=True)\n"
        "lower = model.body[:7].eval(); clean = eval_transform(spec.preprocess)\n"
        "key = StoreKey.for_encoding(spec.name, 7, lower, clean, None, resolve_precision('auto'), 0)\n"
        "t0 = time.perf_counter()\n"
        "encode_into(FeatureStore(root, key), lower, [Sample(p, 0) for p in photos], clean, None, 0)\n"
        "dt = time.perf_counter() - t0\n"
        "print(len(photos), dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)\n"
    )
    rows = []
    for n in args.sizes:
        root = args.out / f"store-{n}"
        shutil.rmtree(root, ignore_errors=True)
        out = subprocess.run([sys.executable, "-c", code, str(n), str(args.data), str(root)], check=True,
                             capture_output=True, text=True).stdout.split()
        rows.append((int(out[0]), float(out[1]), float(out[2])))
        shutil.rmtree(root, ignore_errors=True)
    base = rows[0]
    print(f"{'photos':>8} {'s/photo':>9} {'peak RSS GB':>12} {'RSS vs first':>13}")
    for n, dt, rss in rows:
        print(f"{n:>8} {dt / n:>9.4f} {rss:>12.2f} {rss / base[2]:>12.2f}x")


def part_grow(args: argparse.Namespace) -> None:
    species = sorted(p.name for p in args.data.iterdir() if p.is_dir())
    old = args.out / "grow-data-old"
    shutil.rmtree(old, ignore_errors=True)
    old.mkdir(parents=True)
    for name in species[: args.old]:
        (old / name).symlink_to((args.data / name).resolve())
    store = args.out / "grow-store"
    full_store = args.out / "full-store"
    for d in (store, full_store, args.out / "grow-old", args.out / "grow-new", args.out / "full"):
        shutil.rmtree(d, ignore_errors=True)
    t_old, _ = run([*MONKEYSEE, "train", "--data", str(old), "--out", str(args.out / "grow-old"),
                    "--store", str(store)])
    t_grow, _ = run([*MONKEYSEE, "train", "--data", str(args.data), "--from", str(args.out / "grow-old"),
                     "--out", str(args.out / "grow-new"), "--store", str(store)])
    t_full, rss = run([*MONKEYSEE, "train", "--data", str(args.data), "--out", str(args.out / "full"),
                       "--store", str(full_store)])
    old_set, new_set = set(species[: args.old]), set(species[args.old :])
    for name, d in (("grown", args.out / "grow-new"), ("full retrain", args.out / "full")):
        (ao, no), (an, nn) = accuracy(d, old_set), accuracy(d, new_set)
        print(f"{name:>13}: old species {ao:.2%} ({no} photos), new species {an:.2%} ({nn} photos)")
    acc, n = accuracy(args.out / "full")
    print(f"full retrain (the default train, empty store): {t_full:.0f} s wall, held-out accuracy {acc:.2%} "
          f"on {n} photos; largest peak RSS of the three runs {rss:.2f} GB")
    print(f"first run on {args.old} species {t_old:.0f} s; growing to {len(species)}: {t_grow:.0f} s, "
          f"full retrain {t_full:.0f} s -> growing takes {t_grow / t_full:.1%} of a full retrain")
    s_grow, s_full = (train_seconds(args.out / d) for d in ("grow-new", "full"))
    print(f"encoding + training alone (no test evaluation): growing {s_grow:.0f} s, full retrain "
          f"{s_full:.0f} s -> {s_grow / s_full:.1%}")


def train_seconds(run_dir: Path) -> float:
    """Encoding plus epochs, as the run's manifest records them (without the test evaluation)."""
    from monkeysee.rundir import RunDir

    return float(RunDir(run_dir).read_manifest().metrics["train_seconds"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["train", "memory", "grow"])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/butterflies"))
    ap.add_argument("--out", type=Path, default=Path("runs/scale"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    ap.add_argument("--old", type=int, default=90)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    {"train": part_train, "memory": part_memory, "grow": part_grow}[args.part](args)


if __name__ == "__main__":
    main()
