"""Speed and memory of the default `monkeysee train` on the real data, and prediction throughput
against plain eager PyTorch measured in the same run.

    python benchmarks/train_and_predict.py [--data ../shared/data/monkeys] [--skip-train RUN_DIR]

Training runs in a child process so its peak resident memory is measured exactly (ru_maxrss of the
child). Throughput: the same batch of 32 photos through (a) plain eager PyTorch: fp32, contiguous
tensors, glibc's default malloc (its own process), and (b) monkeysee's Predictor: bf16 autocast where
the CPU has it, channels-last, malloc tuned. Targets: train <= 180 s, peak <= 4 GB, >= 150 photos/s.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PLAIN = r"""
import sys, time, torch
from monkeysee.rundir import load_run
run = load_run(sys.argv[1]); x = torch.load(sys.argv[2])
model = run.model.eval()
with torch.inference_mode():
    model(x)
    t = time.perf_counter(); n = 0
    while time.perf_counter() - t < float(sys.argv[3]):
        model(x); n += len(x)
print(n / (time.perf_counter() - t))
"""

TUNED = r"""
import sys, time, torch
from monkeysee.runtime import tune_malloc
tune_malloc()
from monkeysee.predict import Predictor
p = Predictor.from_run_dir(sys.argv[1]); x = torch.load(sys.argv[2])
p.logits_and_features(x)
t = time.perf_counter(); n = 0
while time.perf_counter() - t < float(sys.argv[3]):
    p.logits_and_features(x); n += len(x)
print(n / (time.perf_counter() - t))
"""


def train(data: Path, out: Path) -> tuple[float, float]:
    """A cold run: a fresh feature store, so every photo is encoded as on a first run."""
    store = out.parent / f"{out.name}-store"
    shutil.rmtree(store, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "monkeysee", "train", "--data", str(data), "--out", str(out),
                    "--store", str(store)], check=True)
    wall = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB -> GiB
    return wall, peak_gb


def batch_of_photos(run_dir: Path, path: Path, n: int = 32) -> None:
    import torch

    from monkeysee.data.images import load_rgb
    from monkeysee.data.transforms import eval_transform
    from monkeysee.rundir import RunDir

    splits = json.loads((run_dir / "splits.json").read_text())
    root = Path(splits["root"])
    rels = [r for rs in splits["splits"]["test"].values() for r in rs][:n]
    tf = eval_transform(RunDir(run_dir).read_manifest().preprocess)
    torch.save(torch.stack([tf(load_rgb(root / r)) for r in rels]), path)


def throughput(script: str, run_dir: Path, batch: Path, seconds: float) -> float:
    out = subprocess.run([sys.executable, "-c", script, str(run_dir), str(batch), str(seconds)],
                         check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "monkeys")
    ap.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    ap.add_argument("--skip-train", type=Path, metavar="RUN_DIR", help="measure prediction on this run only")
    ap.add_argument("--seconds", type=float, default=15.0, help="time per throughput measurement")
    args = ap.parse_args()

    rows = []
    if args.skip_train:
        run_dir = args.skip_train
    else:
        run_dir = args.out or Path(tempfile.mkdtemp(prefix="monkeysee-bench-")) / "run"
        wall, peak = train(args.data, run_dir)
        metrics = json.loads((run_dir / "eval" / "test" / "metrics.json").read_text())
        lo, hi = metrics["accuracy_ci95"]
        rows += [("train wall time (default config)", f"{wall:.0f} s", "<= 180 s",
                  f"{180 / wall:.2f}x budget"),
                 ("train peak memory (RSS)", f"{peak:.2f} GB", "<= 4 GB", f"{4 / peak:.2f}x budget"),
                 ("held-out test accuracy", f"{metrics['accuracy']:.2%} (95% CI {lo:.1%}-{hi:.1%}, "
                  f"n={metrics['n']})", ">= 97%", "")]
    with tempfile.TemporaryDirectory() as tmp:
        batch = Path(tmp) / "batch.pt"
        batch_of_photos(run_dir, batch)
        plain = throughput(PLAIN, run_dir, batch, args.seconds)
        tuned = throughput(TUNED, run_dir, batch, args.seconds)
    rows += [("predict, plain eager PyTorch fp32 (peer)", f"{plain:.0f} photos/s", "", "1.00x"),
             ("predict, monkeysee Predictor", f"{tuned:.0f} photos/s", ">= 150 photos/s",
              f"{tuned / plain:.2f}x peer")]
    width = max(len(r[0]) for r in rows)
    print(f"\nrun: {run_dir}  (batch 32, {args.seconds:.0f} s per throughput measurement)")
    for name, value, target, ratio in rows:
        print(f"{name:<{width}}  {value:<34} {target:<16} {ratio}")


if __name__ == "__main__":
    main()
