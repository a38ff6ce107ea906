"""The species map's layout: UMAP (umap-learn) against openTSNE on one run's photos, in the same run.

    python benchmarks/species_map.py RUN_DIR [--data DIR] [--sample 2000]

Gathers the run's map features once (training and validation photos from the feature store, test photos
from what `evaluate` stored: see `monkeysee.explain.species_map.map_points`), then lays them out with
each method in a fresh subprocess (so each pays its own imports and JIT, as `monkeysee map` does) and
prints per method: wall and CPU seconds, extra peak memory, trustworthiness (sklearn, 10 neighbours,
cosine, on a seeded sample: how many of a photo's map neighbours are true feature-space neighbours) and
how well species separate (5-nearest-neighbour species accuracy in the map, 5-fold), and the ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("umap", "tsne")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(method: str, features: Path, sample: int) -> dict[str, float]:
    """Lay out the saved features with `method` and measure it (runs in its own process)."""
    from sklearn.manifold import trustworthiness
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    from monkeysee.explain.species_map import embed

    with np.load(features) as a:
        x, y = a["x"].astype(np.float32), a["y"]
    before = _rss_mb()
    w0, c0 = time.perf_counter(), time.process_time()
    xy = embed(x, method, seed=0)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    extra = _rss_mb() - before
    again = embed(x[:1000], method, seed=0), embed(x[:1000], method, seed=0)
    at = np.random.default_rng(0).choice(len(x), min(sample, len(x)), replace=False)
    return {"wall_s": wall, "cpu_s": cpu, "extra_peak_mb": extra,
            "trustworthiness": float(trustworthiness(x[at], xy[at], n_neighbors=10, metric="cosine")),
            "knn5_species_acc": float(cross_val_score(KNeighborsClassifier(5), xy, y, cv=5).mean()),
            "same_with_seed": bool(np.array_equal(*again))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?")
    p.add_argument("--data")
    p.add_argument("--sample", type=int, default=2000, help="photos the trustworthiness is measured on")
    p.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--features", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.features, args.sample)))
        return
    if not args.run_dir:
        p.error("RUN_DIR is required")

    from monkeysee.explain.species_map import map_points
    from monkeysee.predict import Predictor

    t0 = time.perf_counter()
    points = map_points(Predictor.from_run_dir(args.run_dir), args.run_dir, args.data, log=print)
    gather = time.perf_counter() - t0
    n, d = points.features.shape
    print(f"{n} photos x {d} features gathered in {gather:.1f} s (store + evaluate's features)")
    with tempfile.TemporaryDirectory() as tmp:
        features = Path(tmp) / "features.npz"
        np.savez(features, x=points.features, y=points.target)
        results = {}
        for method in METHODS:
            out = subprocess.run([sys.executable, __file__, "--one", method, "--features", str(features),
                                  "--sample", str(args.sample)], check=True, capture_output=True, text=True)
            results[method] = json.loads(out.stdout.strip().splitlines()[-1])
    keys = ("wall_s", "cpu_s", "extra_peak_mb", "trustworthiness", "knn5_species_acc", "same_with_seed")
    print(f"{'method':8s} " + " ".join(f"{k:>17s}" for k in keys))
    for method, r in results.items():
        print(f"{method:8s} " + " ".join(f"{r[k]:17.3f}" if isinstance(r[k], float) else f"{r[k]!s:>17s}"
                                         for k in keys))
    u, t = results["umap"], results["tsne"]
    print(f"umap / tsne: wall {u['wall_s'] / t['wall_s']:.2f}x, cpu {u['cpu_s'] / t['cpu_s']:.2f}x, "
          f"extra memory {u['extra_peak_mb'] / max(t['extra_peak_mb'], 1e-9):.2f}x")
    for method, r in results.items():
        print(f"map of {n} photos by {method} (gather + layout): {gather + r['wall_s']:.1f} s wall, "
              f"{r['cpu_s']:.1f} s CPU in the layout (target <= 120 s)")


if __name__ == "__main__":
    main()
