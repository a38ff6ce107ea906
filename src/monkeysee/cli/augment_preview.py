"""`monkeysee augment-preview`: see what training augmentation does to your photos before training."""

from __future__ import annotations

import argparse
from pathlib import Path

from monkeysee.cli import command
from monkeysee.cli.outputs import check_file, declare_outputs

DEFAULT_OUT = "augment-preview.png"


def _arguments(p: argparse.ArgumentParser) -> None:
    from monkeysee.data.augment import DEFAULT_OPS

    p.add_argument(
        "--data", required=True, type=Path, help="data folder (Kaggle layout or one folder per species)"
    )
    p.add_argument(
        "--out", type=Path, default=Path(DEFAULT_OUT), help=f"PNG to write (default: {DEFAULT_OUT})"
    )
    p.add_argument("--photos", type=int, default=6, help="rows: how many photos (default: 6)")
    p.add_argument("--per-photo", type=int, default=5, help="augmented versions per photo (default: 5)")
    p.add_argument("--seed", type=int, default=0, help="seed for photo choice and augmentation (default: 0)")
    p.add_argument("--backbone", default="efficientnet_lite0", help="backbone whose preprocessing to use")
    p.add_argument(
        "--ops",
        default=",".join(DEFAULT_OPS),
        help=f"comma-separated augmentation operations (default: {','.join(DEFAULT_OPS)})",
    )
    p.add_argument(
        "--labels", type=Path, default=None, help="labels file (default: found in the data folder)"
    )
    declare_outputs(p, out=check_file)


@command(
    "augment-preview",
    help="Write a PNG grid showing training augmentation on sample photos.",
    arguments=_arguments,
    order=15,
)
def run(args: argparse.Namespace) -> int:
    from monkeysee.data.augment import AugmentConfig
    from monkeysee.data.layout import scan_dataset
    from monkeysee.data.preview import augmentation_grid
    from monkeysee.errors import ConfigError
    from monkeysee.models import get_backbone

    if args.photos < 1 or args.per_photo < 0:
        raise ConfigError(
            "--photos must be at least 1 and --per-photo at least 0", fix="pass e.g. --photos 6"
        )
    cfg = AugmentConfig(ops=tuple(op.strip() for op in args.ops.split(",") if op.strip()))
    pre = get_backbone(args.backbone).preprocess
    # A preview needs no verified splits: skip decoding the whole set; bad photos are passed over.
    index = scan_dataset(
        args.data, val_fraction=0.0, test_fraction=0.0, labels_file=args.labels, verify=False
    )
    grid = augmentation_grid(
        index.train + index.val, pre, cfg, args.photos, args.per_photo, args.seed, species=index.species
    )
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out, format="PNG")
    print(out)
    return 0
