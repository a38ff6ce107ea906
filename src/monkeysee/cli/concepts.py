"""`monkeysee concepts`: does a concept (a folder of photos showing it) move the model's species scores?"""

from __future__ import annotations

import argparse
from pathlib import Path

from monkeysee.cli import command


def _arguments(p: argparse.ArgumentParser) -> None:
    from monkeysee.explain.concepts import ALPHA, RUNS

    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="folder written by `monkeysee train`")
    p.add_argument("concepts", nargs="+", type=Path, metavar="CONCEPT_DIR",
                   help="folders of photos showing one concept each (e.g. face/ mesh/); the folder's name "
                        "names the concept")
    p.add_argument("--random", type=Path, default=None, metavar="DIR",
                   help="folder of random photos to draw the random sets from (default: the run's "
                        "training photos)")
    p.add_argument("--layer", default=None, help="layer to test at (default: the run's explanation layer)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="the run's photos whose scores are tested (default: test)")
    p.add_argument("--runs", type=int, default=RUNS, help=f"random sets, at least 10 (default: {RUNS})")
    p.add_argument("--alpha", type=float, default=ALPHA, help=f"significance level (default: {ALPHA})")
    p.add_argument("--data", type=Path, default=None, help="data folder (default: where the run was trained)")
    p.add_argument("--precision", default="auto", help="auto, bf16 or fp32")


@command("concepts", help="Test whether concepts (folders of photos) move each species' score (TCAV).",
         arguments=_arguments, order=43)
def run(args: argparse.Namespace) -> int:
    from monkeysee.errors import ConfigError
    from monkeysee.explain.concepts import concepts_for_run
    from monkeysee.explain.shortcuts import format_alarm, scan_shortcuts
    from monkeysee.rundir import RunDir

    if args.runs < 10 or not 0 < args.alpha < 1:
        raise ConfigError(f"--runs {args.runs}, --alpha {args.alpha}",
                          fix="pass --runs 10 or more and an --alpha between 0 and 1, e.g. 0.01")
    results = concepts_for_run(args.run_dir, args.concepts, args.random, args.layer, args.split, args.data,
                               args.runs, args.alpha, args.precision)
    names = [s.display_name for s in RunDir(args.run_dir).read_manifest().species]
    for r in results:
        print(f"concept {r.concept!r} at {r.layer} ({r.photos} photos, {r.runs} random sets):")
        for k, name in enumerate(names):
            mark = "  <- moves it" if r.moves[k] else ""
            print(f"  {name:30s} TCAV {r.scores[k]:.2f} (random {r.random_scores[k]:.2f}) "
                  f"p={r.p_values[k]:.2g}{mark}")
    print(format_alarm(scan_shortcuts(args.run_dir, args.split, args.data, precision=args.precision)))
    return 0
