"""Encode and predict throughput with 1 and 2 torchrun processes on this machine, and each rank's peak RSS.

    python benchmarks/distributed.py [--photos 96] [--views 1]

The driver trains a tiny run on synthetic photos, then launches itself under
`python -m torch.distributed.run --nproc-per-node N` (N = 1, 2) as a worker that encodes its share of
the photos into a fresh feature store (the frozen layers of a training run) and predicts its share of
them (the batch path of `monkeysee predict`). Peers, same code: 1 process with 1 thread, 1 process
with 2 threads (how a plain `monkeysee` runs here), 2 processes with 1 thread each.

On this 2-core machine expect little against a plain run: one process already spreads its
convolutions over both cores, so 2 ranks only win what one process leaves serial (JPEG decoding and
resizing between batches, Python overhead), measured 1.14x encode and 1.27x predict, against 1.6-1.8x
over a one-thread process; and each rank pays its own model, imports and buffers (about 2x the
memory). Across machines or GPUs the shares are independent, so the speed-up is what the slowest
share allows, less the barrier.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]


def worker(run: Path, data: Path, store_root: Path, views: int, report: Path) -> None:
    import torch

    from monkeysee import distributed
    from monkeysee.data.augment import train_transform
    from monkeysee.data.images import iter_photos
    from monkeysee.data.transforms import eval_transform
    from monkeysee.predict import Predictor
    from monkeysee.rundir import RunDir
    from monkeysee.runtime import resolve_precision
    from monkeysee.train.encode import encode_into
    from monkeysee.train.store import FeatureStore, StoreKey

    device = distributed.start(torch.device("cpu"))
    loaded = RunDir(run).load(device)
    manifest = loaded.manifest
    samples = RunDir(run).read_splits(data).train
    cut = len(loaded.model.body) - 2
    lower = loaded.model.body[:cut].eval()
    pre = manifest.preprocess
    clean, aug = eval_transform(pre), train_transform(pre, None)
    precision = resolve_precision("auto", device)
    key = StoreKey.for_encoding(manifest.backbone, cut, lower, clean, aug, precision, 0)
    store = FeatureStore(store_root, key)
    distributed.barrier()
    t0 = time.perf_counter()
    encode_into(store, lower, distributed.share(samples), clean, aug, views, batch_size=32, progress=False)
    distributed.barrier()
    encode_s = time.perf_counter() - t0

    photos = [p for p in iter_photos(data) if p.suffix == ".jpg"]
    predictor = Predictor.from_run_dir(run, device=str(device))
    distributed.barrier()
    t0 = time.perf_counter()
    n = sum(1 for _ in predictor.predict_paths(distributed.share(photos), batch_size=32, workers=0))
    distributed.barrier()
    predict_s = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    mine = {"rank": distributed.rank(), "encode_s": encode_s, "predict_s": predict_s, "peak_rss_mib": rss,
            "encoded": len(distributed.share(samples)), "predicted": n}
    Path(f"{report}.{distributed.rank()}").write_text(json.dumps(mine))


def launch(nproc: int, threads: int, args: list[str], report: Path) -> list[dict]:
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           __file__, "--worker", *args, "--report", str(report)]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [json.loads(Path(f"{report}.{r}").read_text()) for r in range(nproc)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--photos", type=int, default=96, help="synthetic photos (a third per species)")
    p.add_argument("--views", type=int, default=1)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", type=Path)
    p.add_argument("--data", type=Path)
    p.add_argument("--store", type=Path)
    p.add_argument("--report", type=Path)
    a = p.parse_args()
    if a.worker:
        worker(a.run_dir, a.data, a.store, a.views, a.report)
        return

    from monkeysee.train.trainer import Trainer
    from tests.conftest import make_dataset, tiny_config

    root = Path(tempfile.mkdtemp(prefix="bench-dist-"))
    data = make_dataset(root / "data", per_class=a.photos // 3)
    run = Trainer(tiny_config(data, root / "run", test_fraction=0.0, finetune_epochs=0, head_epochs=3),
                  root / "run").run(log=lambda _: None)
    results = {}
    for name, nproc, threads in (("1x1", 1, 1), ("1x2", 1, 2), ("2x1", 2, 1)):
        args = ["--run-dir", str(run), "--data", str(data), "--store", str(root / f"store{name}"),
                "--views", str(a.views)]
        results[name] = launch(nproc, threads, args, root / f"report{name}")
    one, both, two = results["1x1"][0], results["1x2"][0], results["2x1"]
    encoded = sum(r["encoded"] for r in two) * (a.views + 1)
    predicted = sum(r["predicted"] for r in two)
    print(f"{a.photos} photos ({encoded} views encoded, {predicted} predicted), {os.cpu_count()} CPUs")
    for task, count in (("encode", encoded), ("predict", predicted)):
        t1, t12, t2 = one[f"{task}_s"], both[f"{task}_s"], max(r[f"{task}_s"] for r in two)
        print(f"  {task:8s} 1 process x 1 thread {count / t1:6.1f}/s | 1 x 2 threads {count / t12:6.1f}/s | "
              f"2 processes x 1 thread {count / t2:6.1f}/s: {t1 / t2:.2f}x the 1-thread peer, "
              f"{t12 / t2:.2f}x the 2-thread one")
    print(f"  peak RSS  1 process {both['peak_rss_mib']:.0f} MiB | 2 processes "
          + " + ".join(f"rank {r['rank']} {r['peak_rss_mib']:.0f} MiB" for r in two)
          + f" = {sum(r['peak_rss_mib'] for r in two) / both['peak_rss_mib']:.2f}x the memory")


if __name__ == "__main__":
    main()
