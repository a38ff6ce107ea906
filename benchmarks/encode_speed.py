"""How fast does the feature store encode photos, against plain eager PyTorch, and does memory stay flat?

    PYTHONPATH=src:. python benchmarks/encode_speed.py [--photos 300] [--workers 1] [--rss 1000,3000]

EfficientNet-Lite0 (bundled ImageNet weights) cut at its default (the bottom 7 of 9 stages frozen), on
real butterfly photos from ../shared/data (224x224 JPEGs), in this one run:

1. Shard format: writing and randomly gathering (192, 7, 7) bf16 rows: .npy read with positioned reads
   (what the store does), .npy memory maps, and safetensors.
2. Encode speed, clean view, photos/s: (a) plain eager fp32, photo by photo: PIL open, eval transform,
   forward; (b) the same batched (what a careful loop does); (c) `encode_into` (bf16 autocast where
   the CPU has it, channels-last, BatchNorm folded into the convolutions, decoding ahead in DataLoader
   workers, shards written as it goes); (c''') the same without folding.
   Also (d) `encode_into` with 5 augmented views per photo, the training set's real workload.
3. Peak RSS of a fresh process encoding N photos (1 augmented view) into a store and then reading one
   epoch of mini-batches, for each N in --rss: flat means memory does not grow with the data set.
   The store reads with positioned reads, so its shard pages stay in the page cache, out of RSS.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from monkeysee.data.augment import train_transform
from monkeysee.data.images import load_rgb
from monkeysee.data.layout import Sample
from monkeysee.data.transforms import eval_transform
from monkeysee.models import create_model, get_backbone
from monkeysee.runtime import resolve_precision, tune_malloc
from monkeysee.train.encode import encode_into
from monkeysee.train.store import FeatureStore, StoreKey

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "butterflies"
BACKBONE = "efficientnet_lite0"


def photos(n: int) -> list[Sample]:
    """n photos, taken round-robin over the species folders (sorted), so every size of n is mixed."""
    folders = sorted(p for p in DATA.iterdir() if p.is_dir())
    files = [sorted(f.glob("*.jpg")) for f in folders]
    out: list[Sample] = []
    for i in range(max(map(len, files))):
        out += [Sample(fs[i], c) for c, fs in enumerate(files) if i < len(fs)]
    if len(out) < n:
        sys.exit(f"only {len(out)} photos under {DATA}")
    return out[:n]


def frozen() -> tuple[torch.nn.Module, int]:
    spec = get_backbone(BACKBONE)
    model = create_model(BACKBONE, 10, pretrained=True)
    cut = len(model.body) - spec.default_unfreeze
    return model.body[:cut].eval(), cut


# --- 1. formats ------------------------------------------------------------------------------------


def formats(rows: int = 3072, shard: int = 512, batches: int = 100, batch: int = 64) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    data = torch.randn(rows, 192, 7, 7).to(torch.bfloat16)
    rng = np.random.default_rng(0)
    picks = [rng.choice(rows, batch, replace=False) for _ in range(batches)]
    mb = data.numel() * 2 / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        for i in range(0, rows, shard):
            with open(root / f"{i}.npy", "wb") as fp:
                np.save(fp, data[i : i + shard].view(torch.uint16).numpy())
        npy_write = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(0, rows, shard):
            save_file({"acts": data[i : i + shard]}, str(root / f"{i}.safetensors"))
        st_write = time.perf_counter() - t

        maps = [np.load(root / f"{i}.npy", mmap_mode="r") for i in range(0, rows, shard)]
        t = time.perf_counter()
        for p in picks:
            s, r = p // shard, p % shard
            out = np.empty((batch, 192, 7, 7), np.uint16)
            for k in np.unique(s):
                out[s == k] = maps[k][r[s == k]]
        npy_read = time.perf_counter() - t

        fds = [open(root / f"{i}.npy", "rb", buffering=0) for i in range(0, rows, shard)]  # noqa: SIM115
        np.lib.format.read_magic(fds[0])
        np.lib.format.read_array_header_1_0(fds[0])
        offset = fds[0].tell()  # every shard has the same header: same shape and dtype
        row_bytes = 192 * 7 * 7 * 2
        t = time.perf_counter()
        for p in picks:
            out = np.empty((batch, 192 * 7 * 7 * 2), np.uint8)
            for j, (k, r) in enumerate(zip((p // shard).tolist(), (p % shard).tolist(), strict=True)):
                os.preadv(fds[k].fileno(), [out[j]], offset + r * row_bytes)
        pread_read = time.perf_counter() - t
        for fp in fds:
            fp.close()

        files = [safe_open(str(root / f"{i}.safetensors"), "pt") for i in range(0, rows, shard)]
        slices = [f.get_slice("acts") for f in files]
        t = time.perf_counter()
        for p in picks:
            torch.cat([slices[j // shard][j % shard : j % shard + 1] for j in p])
        st_read = time.perf_counter() - t
    per = batches * batch
    print(f"\n1. shard format: {rows} rows of (192, 7, 7) bf16 ({mb:.0f} MB) in shards of {shard}")
    print(f"   write   .npy {mb / npy_write:7.0f} MB/s   safetensors {mb / st_write:7.0f} MB/s")
    print(f"   gather  .npy mmap {per / npy_read:7.0f} rows/s, .npy pread {per / pread_read:7.0f} rows/s, "
          f"safetensors {per / st_read:7.0f} rows/s (random mini-batches of {batch}; "
          f"pread/mmap = {npy_read / pread_read:.2f}x)")


# --- 2. speed --------------------------------------------------------------------------------------


@torch.inference_mode()
def eager_single(lower: torch.nn.Module, samples: list[Sample]) -> float:
    clean = eval_transform(get_backbone(BACKBONE).preprocess)
    t = time.perf_counter()
    for s in samples:
        lower(clean(load_rgb(s.path))[None])
    return len(samples) / (time.perf_counter() - t)


@torch.inference_mode()
def eager_batched(lower: torch.nn.Module, samples: list[Sample], batch: int = 64) -> float:
    clean = eval_transform(get_backbone(BACKBONE).preprocess)
    t = time.perf_counter()
    for i in range(0, len(samples), batch):
        lower(torch.stack([clean(load_rgb(s.path)) for s in samples[i : i + batch]]))
    return len(samples) / (time.perf_counter() - t)


def store_speed(lower: torch.nn.Module, cut: int, samples: list[Sample], views: int, workers: int,
                precision: str, batch: int = 64, fold: bool = True) -> float:
    pre = get_backbone(BACKBONE).preprocess
    clean, aug = eval_transform(pre), train_transform(pre)
    key = StoreKey.for_encoding(BACKBONE, cut, lower, clean, aug, precision, seed=0)
    key = dataclasses.replace(key, folded=fold)
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore(Path(tmp), key)
        report = encode_into(store, lower, samples, clean, aug, views, batch_size=batch, workers=workers,
                             progress=False)
    return len(samples) / report.seconds


def speed(n: int, workers: int, rounds: int) -> None:
    """Each variant `rounds` times, interleaved, best round reported (other users share these cores)."""
    lower, cut = frozen()
    fast = copy.deepcopy(lower).to(memory_format=torch.channels_last)
    samples = photos(n)
    precision = resolve_precision("auto")
    eager_single(lower, samples[:16])  # warm-up: oneDNN primitive creation, file cache
    variants = {
        "a. plain eager fp32, photo by photo": lambda: eager_single(lower, samples),
        "b. eager fp32, batches of 64": lambda: eager_batched(lower, samples),
        f"c. encode_into {precision}, workers={workers}":
            lambda: store_speed(fast, cut, samples, 0, workers, precision),
        f"c'. encode_into fp32, workers={workers}":
            lambda: store_speed(fast, cut, samples, 0, workers, "fp32"),
        f"c''. encode_into {precision}, workers=0": lambda: store_speed(fast, cut, samples, 0, 0, precision),
        f"c'''. encode_into {precision}, BatchNorm not folded":
            lambda: store_speed(fast, cut, samples, 0, workers, precision, fold=False),
        f"d. encode_into {precision}, clean + 5 augmented views":
            lambda: store_speed(fast, cut, samples, 5, workers, precision),
    }
    best = dict.fromkeys(variants, 0.0)
    for _ in range(rounds):
        for name, run in variants.items():
            best[name] = max(best[name], run())
    print(f"\n2. encode speed, {n} photos, torch threads {torch.get_num_threads()}, best of {rounds} rounds")
    base = best["a. plain eager fp32, photo by photo"]
    for name, value in best.items():
        print(f"   {name:<52} {value:7.1f} photos/s  {value / base:5.2f}x")


# --- 3. memory -------------------------------------------------------------------------------------


def _status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in {"VmRSS", "RssAnon", "RssFile", "VmHWM"}:
            out[name] = int(value.split()[0]) // 1024
    return out


def child(n: int, workers: int) -> None:
    """Encode n photos (1 augmented view) into a fresh store, read one epoch, print memory as JSON."""
    lower, cut = frozen()
    lower = lower.to(memory_format=torch.channels_last)
    samples = photos(n)
    pre = get_backbone(BACKBONE).preprocess
    clean, aug = eval_transform(pre), train_transform(pre)
    key = StoreKey.for_encoding(BACKBONE, cut, lower, clean, aug, resolve_precision("auto"), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore(Path(tmp), key)
        start = _status()
        report = encode_into(store, lower, samples, clean, aug, 1, batch_size=64, workers=workers,
                             progress=False)
        after_encode = _status()
        split = store.split(samples, 1)
        gen = torch.Generator().manual_seed(0)
        view = torch.randint(2, (len(split),), generator=gen)
        for rows in torch.randperm(len(split), generator=gen).split(64):
            split.gather(view[rows], rows).float()
        after_epoch = _status()
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps({"n": n, "start": start, "encode": after_encode, "epoch": after_epoch, "peak": peak,
                      "bytes_per_photo": size / n, "seconds": report.seconds}))


def memory(sizes: list[int], workers: int) -> None:
    print("\n3. memory (MB) of a fresh process: encode N photos x 2 views into a store, then one epoch")
    print(f"   {'N':>6} {'peak RSS':>9} {'anon after encode':>18} {'anon after epoch':>17} "
          f"{'file-backed after epoch':>24} {'store/photo':>12}")
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--workers", str(workers)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"   {n:>6} {r['peak']:>9} {r['encode']['RssAnon']:>18} {r['epoch']['RssAnon']:>17} "
              f"{r['epoch']['RssFile']:>24} {r['bytes_per_photo'] / 1e3:>9.1f} kB"
              f"   ({n / r['seconds']:.0f} photos/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rss", default="1000,3000", help="comma-separated photo counts ('' to skip)")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: formats,speed")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    tune_malloc()  # as the monkeysee entry point does, for every row alike
    if args.child:
        child(args.child, args.workers)
        return
    skip = set(args.skip.split(","))
    if "formats" not in skip:
        formats()
    if "speed" not in skip:
        speed(args.photos, args.workers, args.rounds)
    if args.rss:
        memory([int(n) for n in args.rss.split(",")], args.workers)


if __name__ == "__main__":
    main()
