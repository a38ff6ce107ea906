"""k-th nearest-neighbour similarity at large banks: per-query cost and memory against bank size.

    PYTHONPATH=src:. python benchmarks/knn_bank.py [--sizes 10000,100000,300000] [--queries 256] [--k 10]

1280-d features (EfficientNet-Lite0's pooled width), non-negative like post-activation features, in this
one run for each bank size:

* numpy: the knn detector's scoring today (`models.unknown.KNN.score`, float64, max_train = bank size);
* NeighbourBank: `models.neighbours`, exact float32, blocked matrix products with a running top-k;
* faiss Flat: `faiss.IndexFlatIP` (exact) and IVF: `IndexIVFFlat` (approximate; 4*sqrt(N) lists, 8
  probed, trained on at most 50k rows), when faiss is importable; recall is against the exact k-th.

Memory: the bank as stored, and the peak extra RSS of one scoring call (VmHWM reset before the call).
"""

from __future__ import annotations

import argparse
import gc
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from monkeysee.models.neighbours import NeighbourBank
from monkeysee.models.unknown import KNN

DIM = 1280


def _rss() -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def measure(score: Callable[[], np.ndarray]) -> tuple[float, int, np.ndarray]:
    """Seconds and peak extra bytes of one call to `score` (after one warm-up call)."""
    score()
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before, _ = _rss()
    t = time.perf_counter()
    out = score()
    seconds = time.perf_counter() - t
    return seconds, _rss()[1] - before, out


def features(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(size=(100, DIM))).astype(np.float32)
    x = centres[rng.integers(0, 100, n)] + np.abs(rng.normal(scale=0.8, size=(n, DIM))).astype(np.float32)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,300000")
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    try:
        import faiss
    except ImportError:
        faiss = None
    q = features(args.queries, seed=1)
    print(f"{args.queries} queries, k={args.k}, d={DIM}; ms per query, bank MB, peak extra MB of one call")
    header = f"{'bank':>8} {'method':<22} {'ms/query':>9} {'bank MB':>8} {'extra MB':>9} {'vs numpy':>9}"
    print(f"{header} k-th vs exact")
    for n in [int(s) for s in args.sizes.split(",")]:
        x = features(n, seed=0)
        rows: dict[str, tuple[float, int, int, np.ndarray]] = {}
        knn = KNN(k=args.k, max_train=n).fit(x)
        s, extra, out = measure(lambda knn=knn: 1.0 - knn.score(np.zeros((len(q), 1)), q))
        rows["numpy (KNN.score)"] = (s, knn.bank.nbytes, extra, out)
        del knn
        bank = NeighbourBank(x)
        s, extra, out = measure(lambda bank=bank: bank.kth_similarity(q, args.k))
        rows["NeighbourBank"] = (s, bank.nbytes, extra, out)
        normed = bank.bank.numpy()
        del bank
        if faiss is not None:
            flat = faiss.IndexFlatIP(DIM)
            flat.add(normed)
            qn = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
            s, extra, out = measure(lambda flat=flat, qn=qn: flat.search(qn, args.k)[0][:, -1])
            rows["faiss IndexFlatIP"] = (s, flat.ntotal * DIM * 4, extra, out)
            del flat
            lists = int(4 * math.sqrt(n))
            ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, lists, faiss.METRIC_INNER_PRODUCT)
            ivf.train(normed[np.random.default_rng(0).choice(n, min(n, 50_000), replace=False)])
            ivf.add(normed)
            ivf.nprobe = 8
            s, extra, out = measure(lambda ivf=ivf, qn=qn: ivf.search(qn, args.k)[0][:, -1])
            rows[f"faiss IVF{lists},probe8"] = (s, ivf.ntotal * DIM * 4, extra, out)
            del ivf
        exact = rows["NeighbourBank"][3]
        base = rows["numpy (KNN.score)"][0]
        for name, (s, nbytes, extra, out) in rows.items():
            err = np.abs(out - exact).max()
            print(f"{n:>8} {name:<22} {s / len(q) * 1e3:>9.3f} {nbytes / 1e6:>8.0f} {extra / 1e6:>9.0f} "
                  f"{base / s:>8.1f}x max |diff| {err:.1e}")
        del x, normed, rows
        gc.collect()


if __name__ == "__main__":
    main()
