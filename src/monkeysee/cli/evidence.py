"""`monkeysee evidence`: (re)build a finished run's evidence bank, the training photos each answer is
compared with (their features and thumbnails), in the run folder itself."""

from __future__ import annotations

import argparse
from pathlib import Path

from monkeysee.cli import command


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help="folder written by `monkeysee train` (written into: copy it first to keep it)")
    p.add_argument("--data", type=Path, default=None,
                   help="data folder (default: where the run was trained, from splits.json)")
    p.add_argument("--batch-size", type=int, default=32, help="photos per forward pass")
    p.add_argument("--workers", type=int, default=2, help="threads decoding photos")
    p.add_argument("--device", default="cpu", help="torch device for the forward pass")
    p.add_argument("--store", type=Path, default=None,
                   help="the feature store the run trained with: read the pooled features from it")


@command("evidence", help="Build the nearest-training-photo evidence (features and thumbnails) of a run",
         arguments=_arguments, order=35)
def run(args: argparse.Namespace) -> int:
    from monkeysee.train.evidence import rebuild

    rebuild(args.run_dir, args.data, batch_size=args.batch_size, workers=args.workers, device=args.device,
            store=args.store)
    return 0
