"""`monkeysee atlas`: what every channel of a layer responds to in the run's own training photos."""

from __future__ import annotations

import argparse
from pathlib import Path

from monkeysee.cli import command
from monkeysee.cli.outputs import check_folder, declare_outputs


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="folder written by `monkeysee train`")
    p.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="dotted module names (default: every body stage)")
    p.add_argument("--channels", type=int, default=32,
                   help="channels drawn per layer, from channel 0 (default: 32; 0 = all). The index "
                        "holds every channel's top patches either way")
    p.add_argument("--top", type=int, default=9, help="patches per channel (default: 9)")
    p.add_argument("--split", default="train", choices=("train", "val", "test"),
                   help="the run's photos to search (default: train)")
    p.add_argument("--data", type=Path, default=None, help="data folder (default: where the run was trained)")
    p.add_argument("--patch-size", type=int, default=64, help="pixels per patch on the sheets (default: 64)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="auto", help="auto, bf16 or fp32")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN_DIR/atlas)")
    declare_outputs(p, out=check_folder)


@command("atlas", help="Draw the top patches of every channel of a layer over the run's training photos.",
         arguments=_arguments, order=42)
def run(args: argparse.Namespace) -> int:
    from monkeysee.errors import ConfigError, DataError
    from monkeysee.explain.atlas import channel_atlas
    from monkeysee.explain.atlas_render import write_atlas
    from monkeysee.rundir import RunDir

    if args.channels < 0 or args.top < 1 or args.patch_size < 8:
        raise ConfigError(f"--channels {args.channels}, --top {args.top}, --patch-size {args.patch_size}",
                          fix="pass --channels 0 or more, --top 1 or more, --patch-size 8 or more")
    run_dir = RunDir(args.run_dir)
    loaded = run_dir.load()
    samples = run_dir.read_splits(args.data).split(args.split)
    if not samples:
        raise DataError(f"the run's {args.split} split is empty", fix="choose another --split",
                        path=run_dir.path)
    if not any(s.path.is_file() for s in samples):
        raise DataError(f"none of the run's {args.split} photos are where it recorded them",
                        fix="pass --data DIR where the training data now lives", path=samples[0].path)
    atlas = channel_atlas(loaded.model, loaded.manifest.preprocess, [s.path for s in samples],
                          args.layers, args.top, args.batch_size, args.precision)
    out = args.out or run_dir.atlas_dir
    page = write_atlas(atlas, out, args.channels, args.patch_size,
                       title=f"Channel atlas of {args.run_dir.name} ({args.split} photos)")
    for item in atlas.unreadable:
        print(f"skipped {item['path']}: {item['error']}")
    print(f"{len(atlas.layers)} layers, {len(atlas.photos)} photos, {atlas.seconds:.1f} s -> {page}")
    return 0
