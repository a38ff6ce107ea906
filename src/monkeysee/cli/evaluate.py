"""`monkeysee evaluate`: accuracy with a confidence interval, per-species scores, confusion, mistakes."""

from __future__ import annotations

import argparse

from monkeysee.cli import command


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `monkeysee train`")
    p.add_argument("--data", help="data folder (default: where the run was trained)")
    p.add_argument("--split", default="test",
                   help="test (held out, default), val, train, validation (DIR/validation), or a PATH "
                        "laid out folder-per-species")
    p.add_argument("--precision", default="auto", help="auto, bf16 or fp32")
    p.add_argument("--species-map", action="store_true",
                   help="also lay out the species map of the test split (see `monkeysee map`)")
    p.add_argument("--no-shortcuts", dest="shortcuts", action="store_false",
                   help="skip the shortcut alarm (Grad-CAM mass on each species' photo borders)")


@command("evaluate", help="Evaluate a trained run on a split", arguments=_arguments, order=20)
def run(args: argparse.Namespace) -> int:
    from monkeysee.evaluate.runner import evaluate_run
    from monkeysee.predict import Predictor

    predictor = Predictor.from_run_dir(args.run_dir, precision=args.precision)
    evaluate_run(args.run_dir, split=args.split, data=args.data, predictor=predictor)
    if args.species_map and args.split == "test":
        from monkeysee.explain.species_map import compute_species_map

        compute_species_map(predictor, args.run_dir, args.data)
    if args.shortcuts and args.split in ("test", "val", "train"):
        from monkeysee.explain.shortcuts import format_alarm, scan_shortcuts

        print(format_alarm(scan_shortcuts(args.run_dir, args.split, args.data, precision=args.precision)))
    return 0
