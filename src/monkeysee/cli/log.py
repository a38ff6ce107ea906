"""`monkeysee log`: the keeper's log from the command line: keepers, places, exports, backups and the
photos that teach the model. Every action takes --db (a SQLite file or a postgresql:// URL; default
MONKEYSEE_DB) and --photos (the photo folder; default beside a SQLite file, else MONKEYSEE_PHOTOS)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from monkeysee.cli import command
from monkeysee.errors import ConfigError

if TYPE_CHECKING:
    from monkeysee.data.species import Species
    from monkeysee.sightings import Store

Action = Callable[[argparse.Namespace], int]
FORMATS = ("csv", "dwc", "camtrap-dp")


def _store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="the log: a SQLite file or a postgresql:// URL (default: $MONKEYSEE_DB)")
    p.add_argument("--photos", metavar="DIR", help="the photo folder (default: beside a SQLite file, else "
                                                   "$MONKEYSEE_PHOTOS)")


def _action(sub: argparse._SubParsersAction, name: str, help: str, run: Action) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    _store_options(p)
    p.set_defaults(_action=run)
    return p


def _site(text: str) -> tuple[float, float]:
    try:
        lat, lon = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LAT,LON (e.g. 51.535,-0.153)") from None
    return lat, lon


def _arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="log_action", metavar="ACTION", required=True)
    keeper = sub.add_parser("keeper", help="add or list keepers", description="add or list keepers")
    ksub = keeper.add_subparsers(dest="keeper_action", metavar="ACTION", required=True)
    add = _action(ksub, "add", "add a keeper and print their token (shown once; only its hash is kept)",
                  _keeper_add)
    add.add_argument("name", metavar="NAME")
    add.add_argument("--reviewer", action="store_true", help="may confirm and correct sightings")
    _action(ksub, "list", "list the keepers and their roles", _keeper_list)
    place = _action(sub, "place", "add a place (an enclosure) to the list", _place_add)
    place.add_argument("name", metavar="NAME")
    place.add_argument("--site", type=_site, metavar="LAT,LON", help="its coordinates")
    exp = _action(sub, "export", "write the log as CSV, Darwin Core (dwc) or a Camtrap DP package", _export)
    exp.add_argument("--format", choices=FORMATS, required=True)
    exp.add_argument("out", metavar="OUT", help="a CSV file (csv, dwc) or a folder (camtrap-dp)")
    exp.add_argument("--site", type=_site, metavar="LAT,LON",
                     help="the zoo's coordinates, for places without their own (Camtrap DP needs them)")
    exp.add_argument("--local-schemas", action="store_true",
                     help="camtrap-dp: name copies of the Camtrap DP 1.0 table schemas written beside the "
                          "package instead of their URLs, to validate it offline")
    back = _action(sub, "backup", "write every row and photo of the log to one tar file", _backup)
    back.add_argument("file", metavar="FILE")
    rest = _action(sub, "restore", "load a backup into an empty log (any database)", _restore)
    rest.add_argument("file", metavar="FILE")
    train = _action(sub, "export-training", "write confirmed and corrected photos as a folder per species, "
                    "for `monkeysee train --from RUN --data DIR`", _export_training)
    train.add_argument("out", metavar="DIR")
    train.add_argument("--run", metavar="RUN_DIR", help="name folders by this run's species labels, and link "
                       "its own photos in beside the corrections (what `train --from RUN` needs)")
    train.add_argument("--run-data", metavar="DIR", help="where the run's photos are now, if they moved")


@command("log", help="The keeper's log: keepers, places, exports, backups, corrections for training",
         arguments=_arguments, order=70)
def run(args: argparse.Namespace) -> int:
    return int(args._action(args))


def open_log(args: argparse.Namespace) -> Store:
    from monkeysee.sightings import Store

    return Store.open(args.db, photos=args.photos)


def _keeper_add(args: argparse.Namespace) -> int:
    store = open_log(args)
    keeper, token = store.add_keeper(args.name, reviewer=args.reviewer)
    print(f"{keeper.role} {keeper.name} added. Token (shown this once; keep it safe):")
    print(token)
    return 0


def _keeper_list(args: argparse.Namespace) -> int:
    for k in open_log(args).keepers():
        print(f"{k.id:>4}  {k.role:<8}  {k.name}")
    return 0


def _place_add(args: argparse.Namespace) -> int:
    from monkeysee.sightings import PlaceView

    lat, lon = args.site or (None, None)
    open_log(args).add_places([PlaceView(args.name, lat, lon)])
    print(f"place {args.name!r} listed")
    return 0


def _export(args: argparse.Namespace) -> int:
    from monkeysee.sightings.exports import ExportOptions, export

    out = Path(args.out)
    if args.format != "camtrap-dp" and out.is_dir():
        raise ConfigError(f"{args.format} is written to a file, but OUT is a folder", path=out,
                          fix="pass a file name such as log.csv")
    written = export(open_log(args), args.format, out, ExportOptions(site=args.site,
                                                                      local_schemas=args.local_schemas))
    print(f"wrote {', '.join(str(w) for w in written)}")
    return 0


def _backup(args: argparse.Namespace) -> int:
    from monkeysee.sightings.backup import backup

    rows = backup(open_log(args), Path(args.file))
    print(f"{args.file}: " + ", ".join(f"{n} {t}" for t, n in rows.items()))
    return 0


def _restore(args: argparse.Namespace) -> int:
    from monkeysee.sightings.backup import restore

    rows = restore(open_log(args), Path(args.file))
    print("restored " + ", ".join(f"{n} {t}" for t, n in rows.items()))
    return 0


def _export_training(args: argparse.Namespace) -> int:
    from monkeysee.sightings.training import export_training

    known: tuple[Species, ...] = ()
    run_photos: list[tuple[Path, str]] = []
    if args.run:
        from monkeysee.rundir import RunDir

        run = RunDir(args.run)
        known = tuple(run.read_manifest().species)
        index = run.read_splits(args.run_data)
        run_photos = [(s.path, index.species[s.target].label)
                      for split in ("train", "val", "test") for s in index.split(split)]
    counts = export_training(open_log(args), Path(args.out), known, run_photos)
    if not counts:
        print("no confirmed or corrected sightings with photos yet")
        return 0
    print(f"{sum(counts.values())} reviewed photos in {len(counts)} species folders under {args.out}: " +
          ", ".join(f"{k} {n}" for k, n in counts.items()) +
          (f"; beside {len(run_photos)} photos of {args.run}, linked" if run_photos else ""))
    print(f"Grow a run with them: monkeysee train --from RUN --data {args.out} --out NEW_RUN")
    return 0
