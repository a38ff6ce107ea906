"""`monkeysee store`: what a feature store holds and what each part of it is keyed by."""

from __future__ import annotations

import argparse

from monkeysee.cli import command


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="the feature-store folder (--store of train; default feature-store/ beside "
                                 "the run folders)")


@command("store", help="List what a feature store holds: a line per table, with its key and size",
         arguments=_arguments, order=12)
def run(args: argparse.Namespace) -> int:
    from monkeysee.train.store import describe_store

    tables = describe_store(args.store)
    if not tables:
        print(f"{args.store}: no tables (nothing encoded yet)")
        return 0
    print(f"{'folder':<23} {'holds':<16} {'views':<9} {'backbone':<20} {'cut':>3} {'precision':<9} "
          f"{'rows':>9} {'MB':>9}")
    for t in tables:
        key = t.key
        print(f"{t.folder:<23} {t.what:<16} {t.views:<9} {key.get('backbone', '?'):<20} "
              f"{key.get('cut', '?'):>3} {key.get('precision', '?'):<9} {t.rows:>9} {t.bytes / 1e6:>9.1f}")
    total = sum(t.bytes for t in tables)
    print(f"{len(tables)} tables, {total / 1e6:.1f} MB. Deleting any folder is safe: a later run computes "
          "what it needs again.")
    return 0
