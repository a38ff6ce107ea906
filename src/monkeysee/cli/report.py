"""`monkeysee report`: one self-contained HTML page that shows how good a run is and why."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from monkeysee.cli import command


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="folder written by `monkeysee train`")
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data folder (default: where the run was trained, from splits.json)",
    )
    p.add_argument("--out", type=Path, default=None, help="HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument(
        "--ood",
        type=Path,
        default=None,
        metavar="DIR",
        help="photos of no known species, to show how well the unknown detector rejects them",
    )
    p.add_argument(
        "--faithfulness-photos",
        type=int,
        default=8,
        metavar="N",
        help="test photos for the explanation-faithfulness table (default: 8; 0 skips it)",
    )
    p.add_argument(
        "--faithfulness-steps",
        type=int,
        default=8,
        metavar="N",
        help="deletion/insertion steps in that table (default: 8)",
    )
    p.add_argument(
        "--faithfulness-methods",
        nargs="+",
        default=None,
        metavar="METHOD",
        help="CAM methods compared there, or 'all' (default: gradcam gradcam++)",
    )
    p.add_argument(
        "--gallery-per-species",
        type=int,
        default=4,
        metavar="K",
        help="correct and wrong photos shown per species (default: 4; 0 skips the gallery)",
    )
    p.add_argument("--precision", default="auto", help="auto, bf16 or fp32 for predictions (default: auto)")


@command(
    "report",
    help="Write one self-contained HTML page: how good a run is and why",
    arguments=_arguments,
    order=30,
)
def run(args: argparse.Namespace) -> int:
    import time

    from monkeysee.report import ReportOptions, build_report

    methods: dict[str, Any]
    methods = {"faithfulness_methods": tuple(args.faithfulness_methods)} if args.faithfulness_methods else {}
    options = ReportOptions(
        data=args.data,
        out=args.out,
        ood=args.ood,
        faithfulness_photos=args.faithfulness_photos,
        faithfulness_steps=args.faithfulness_steps,
        gallery_per_species=args.gallery_per_species,
        precision=args.precision,
        **methods,
    )
    start = time.perf_counter()
    out = build_report(args.run_dir, options)
    size = out.stat().st_size / 1e6
    print(f"wrote {out} ({size:.1f} MB) in {time.perf_counter() - start:.0f} s")
    return 0
