"""How long does the channel atlas of every block take, next to one plain forward pass over the same photos?

    python benchmarks/atlas.py [RUN_DIR] [--data DIR] [--limit N]

RUN_DIR defaults to /tmp/base/run (EfficientNet-Lite0 on the 10 monkeys); its training split is used.
Three timings in this one process, in this order, each over the same photos with the same decoding:
  plain   one forward pass (`forward_pass`, no hooks), the peer every atlas must pay at least once;
  pass    the atlas pass: the same forward with a running top-k hook on every body stage;
  cut     re-decoding the photos that hold a shown patch and drawing the sheets (32 channels, top 9).
Prints seconds, the ratio pass/plain and (pass + cut)/plain, and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", nargs="?", default="/tmp/base/run")
    parser.add_argument("--data", default="/work/shared/data/monkeys")
    parser.add_argument("--limit", type=int, default=0, help="use the first N training photos (0: all)")
    args = parser.parse_args()

    from monkeysee.explain.atlas import channel_atlas
    from monkeysee.explain.atlas_render import write_atlas
    from monkeysee.explain.batches import PhotoBatches
    from monkeysee.models.forward import forward_pass
    from monkeysee.rundir import RunDir
    from monkeysee.runtime import checked_precision, tune_malloc

    tune_malloc()
    run = RunDir(args.run_dir)
    loaded = run.load()
    photos = [s.path for s in run.read_splits(args.data).split("train")]
    photos = photos[: args.limit] if args.limit else photos
    pre = loaded.manifest.preprocess
    precision = checked_precision("auto", "cpu")
    print(f"{len(photos)} training photos of {args.run_dir}, {torch.get_num_threads()} threads, {precision}")

    start = time.perf_counter()
    for _, x in PhotoBatches(photos, pre, 32):
        forward_pass(loaded.model, x, precision=precision)
    plain = time.perf_counter() - start
    print(f"plain forward pass      {plain:7.1f} s")

    atlas = channel_atlas(loaded.model, pre, photos, precision=precision)
    print(f"atlas pass (9 layers)   {atlas.seconds:7.1f} s   x{atlas.seconds / plain:.2f} of plain")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        write_atlas(atlas, Path(out), channels=32)
    cut = time.perf_counter() - start
    total = atlas.seconds + cut
    print(f"cut patches + sheets    {cut:7.1f} s")
    print(f"atlas total             {total:7.1f} s   x{total / plain:.2f} of plain")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory    {peak:7.0f} MB (whole process, model and decoding included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
