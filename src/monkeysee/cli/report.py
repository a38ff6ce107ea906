"""`monkeysee report`: one self-contained HTML page that shows how good a run is and why."""

from __future__ import annotations

import argparse
from pathlib import Path

from monkeysee.cli import command
from monkeysee.cli.options import add_options, option_values
from monkeysee.cli.outputs import check_file, declare_outputs
from monkeysee.report import ReportOptions

_OPTIONS: dict[str, dict[str, str]] = {
    "data": {"help": "data folder (default: where the run was trained, from splits.json)"},
    "out": {"help": "HTML file to write (default: RUN_DIR/report.html)"},
    "ood": {"help": "photos of no known species, to show how well the unknown detector rejects them",
            "metavar": "DIR"},
    "faithfulness_photos": {"help": "test photos for the explanation-faithfulness table; 0 skips it",
                            "metavar": "N"},
    "faithfulness_steps": {"help": "deletion/insertion steps in that table", "metavar": "N"},
    "faithfulness_methods": {"help": "CAM methods compared there, or 'all'", "metavar": "METHOD"},
    "gallery_per_species": {"help": "correct and wrong photos shown per species; 0 skips the gallery",
                            "metavar": "K"},
    "precision": {"help": "auto, bf16 or fp32 for predictions"},
    "species_map": {"help": "lay out the species map when none is stored (as `monkeysee map` does)"},
}


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="folder written by `monkeysee train`")
    add_options(p, ReportOptions, names=_OPTIONS, metadata=_OPTIONS)
    declare_outputs(p, out=check_file)


@command(
    "report",
    help="Write one self-contained HTML page: how good a run is and why",
    arguments=_arguments,
    order=30,
)
def run(args: argparse.Namespace) -> int:
    import time

    from monkeysee.report.builder import build_report

    options = ReportOptions(**option_values(args, ReportOptions))
    start = time.perf_counter()
    out = build_report(args.run_dir, options)
    size = out.stat().st_size / 1e6
    print(f"wrote {out} ({size:.1f} MB) in {time.perf_counter() - start:.0f} s")
    return 0
