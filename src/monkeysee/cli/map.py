"""`monkeysee map`: where a run's photos sit in its feature space, as a standalone HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path

from monkeysee.cli import command
from monkeysee.cli.outputs import check_file, declare_outputs


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="folder written by `monkeysee train`")
    p.add_argument("--out", type=Path,
                   help="HTML file to write (default: RUN_DIR/eval/test/species_map.html)")
    p.add_argument("--data", type=Path, help="data folder (default: where the run was trained)")
    p.add_argument("--method", default="tsne", help="tsne (openTSNE, default) or umap (umap-learn)")
    p.add_argument("--seed", type=int, default=0, help="seed of the layout (default 0)")
    p.add_argument("--thumbnails", type=int, default=1500, metavar="N",
                   help="photos that carry a hover thumbnail (default 1500; mistakes and rejected first)")
    p.add_argument("--recompute", action="store_true", help="lay the map out again even if one is stored")
    p.add_argument("--precision", default="auto", help="auto, bf16 or fp32 for photos not in the store")
    declare_outputs(p, out=check_file)


@command("map", help="Lay out a run's photos by their features: a species map with hover and zoom",
         arguments=_arguments, order=28)
def run(args: argparse.Namespace) -> int:
    from monkeysee.explain.map_render import write_map_page
    from monkeysee.explain.species_map import MAP_METHODS
    from monkeysee.predict import Predictor

    MAP_METHODS.check(args.method)
    predictor = Predictor.from_run_dir(args.run_dir, precision=args.precision)
    out = write_map_page(predictor, args.run_dir, args.out, data=args.data, method=args.method,
                         seed=args.seed, thumbnails=args.thumbnails, recompute=args.recompute)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0
