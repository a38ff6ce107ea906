"""`monkeysee predict`: species for photos and folders; a table for people, JSON/CSV for machines.

Folders are streamed (any number of photos), a bad file becomes an error row and the rest go on, and
`--csv` is resumable: photos with a finished row in the file are skipped however their path is written,
photos whose row is an error are tried again, and the file ends with one row per photo (see
`monkeysee.results_csv`). Output paths are checked before the model is loaded.

Under `torchrun` each rank predicts every `WORLD_SIZE`-th photo of the listing (from its `RANK`),
rank 0 into the CSV itself and the others into part files beside it (`out.csv.part1`, ...), which
rank 0 appends to the CSV and removes at the end. A photo in the CSV or any part file counts as done,
so a killed run resumes with any number of processes, one included.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from monkeysee.cli import command
from monkeysee.cli.outputs import check_file, check_folder, declare_outputs
from monkeysee.errors import ConfigError
from monkeysee.results_csv import ShardedCsv, check_results_file, source_key

if TYPE_CHECKING:
    from monkeysee.explain import Explainer
    from monkeysee.predict import Prediction, Predictor


BATCH_SIZE = 16
"""Photos per forward pass: on 2 CPU cores batch 16 predicted 79.6 photos/s against 71.6 at batch 32 (the
same 276 photos, interleaved), and it keeps predict on 100 phone photos within 1.5 GB."""

def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `monkeysee train`")
    p.add_argument("photos", metavar="PHOTO", nargs="+", help="photos and/or folders (walked recursively)")
    p.add_argument("--top-k", type=int, default=3, help="species listed per photo (default 3)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object per photo (JSON Lines)")
    out.add_argument("--csv", metavar="FILE",
                     help="write rows to FILE; an existing FILE of ours is resumed (error rows tried again)")
    p.add_argument("--cams", metavar="DIR", help="also write a Grad-CAM overlay per photo into DIR")
    p.add_argument("--unknown-threshold", type=float, help="override the calibrated unknown threshold")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                   help=f"photos per pass (default: {BATCH_SIZE})")
    p.add_argument("--tta", metavar="VIEW,...", type=_views, default=[],
                   help="test-time augmentation: also look at these comma-separated views and average "
                        "(hflip, zoom); costs one more pass per view; not with --cams")
    p.add_argument("--collection", metavar="FILE",
                   help="species of this zoo or enclosure, one per line (label, common or Latin name): "
                        "a species outside it is never the answer")
    p.add_argument("--precision", default="auto", help="auto, bf16 or fp32")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto; under torchrun a rank's "
                   "cuda is its cuda:LOCAL_RANK")
    declare_outputs(p, cams=check_folder, csv=check_csv)
    p.add_argument("--log", metavar="DB", help="log each photo as a sighting in the keeper's log (a SQLite "
                   "file or a postgresql:// URL); resumable: photos already logged are skipped")
    p.add_argument("--place", help="with --log: where the photos were taken (a listed place, or text)")
    p.add_argument("--photos-dir", metavar="DIR", help="with --log: the log's photo folder (default: beside "
                   "a SQLite file, else $MONKEYSEE_PHOTOS)")


def _views(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def iter_inputs(items: Iterable[str]) -> Iterator[Path]:
    """Files as given, folders walked; a path that does not exist is passed on to become an error row."""
    from monkeysee.data.folders import iter_photos

    for item in items:
        path = Path(item)
        if path.is_dir():
            yield from iter_photos(path)
        else:
            yield path


def check_options(args: argparse.Namespace) -> None:
    """Every option checked before the model is loaded or a photo read."""
    from monkeysee.runtime import checked_precision

    for name in ("top_k", "batch_size"):
        value = getattr(args, name)
        if value < 1:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be at least 1, not {value}", fix=f"pass e.g. {flag} 32")
    checked_precision(args.precision)
    from monkeysee.predict import TTA_VIEWS

    for name in args.tta:
        TTA_VIEWS.check(name)
    if args.tta and args.cams:
        raise ConfigError("--cams explains the photo as taken, while --tta answers for several views",
                          fix="drop --tta to draw heatmaps, or --cams to average views")
    check_inputs(args.photos)


def check_csv(flag: str, path: Path) -> None:
    """A results CSV to write or resume: a file in a writable folder, new or of our own columns."""
    check_results_file(path, flag)
    check_file(flag, path)


def check_inputs(items: Iterable[str]) -> None:
    """A folder among the inputs that holds no photo at all is refused, so a wrong path never ends in an
    empty answer that looks like success."""
    from monkeysee.data.folders import iter_photos

    for item in items:
        if Path(item).is_dir() and next(iter(iter_photos(item)), None) is None:
            raise ConfigError("no photos found in this folder (nor in its subfolders)", path=item,
                              fix="pass the folder that holds the photos")


@command("predict", help="Name the species in photos or folders", arguments=_arguments, order=30)
def run(args: argparse.Namespace) -> int:
    from monkeysee import distributed
    from monkeysee.predict import Predictor
    from monkeysee.runtime import pick_device

    check_options(args)
    if args.log:
        return _log(args)
    device = distributed.start(pick_device(args.device))
    predictor = Predictor.from_run_dir(args.run_dir, device=str(device), precision=args.precision,
                                       unknown_threshold=args.unknown_threshold, tta=args.tta,
                                       collection=args.collection)
    out = ShardedCsv(Path(args.csv)) if args.csv else None
    skip = out.done if out else set()
    rank, world = distributed.rank(), distributed.size()
    # The share is taken from the whole listing before skipping, so it never depends on what is done.
    paths = (p for i, p in enumerate(iter_inputs(args.photos))
             if i % world == rank and (not skip or source_key(p) not in skip))
    explainer = _explainer(predictor, args.cams)
    counts = {"photos": 0, "errors": 0, "unknown": 0, "retake": 0}
    bar = tqdm(desc="predicting", unit="photo",
               disable=None if (out or args.json) and distributed.is_main() else True)
    try:
        for pred in predictor.predict_paths(paths, args.top_k, args.batch_size, heatmaps=explainer):
            counts["photos"] += 1
            counts["errors"] += pred.error is not None
            counts["unknown"] += pred.unknown
            counts["retake"] += pred.retake
            if out is not None:
                out.add(pred)
            elif args.json:
                print(json.dumps(pred.to_dict()), flush=True)
            else:
                print(pred.line(), flush=True)
            if pred.overlay is not None:
                _write_cam(pred, Path(args.cams))
            if out is not None and counts["photos"] % args.batch_size == 0:
                out.flush()
            bar.update(1)
    finally:
        bar.close()
        if out is not None:
            out.close()
    if world > 1:  # also the wait for every rank to have closed its part file
        totals = distributed.all_reduce_sum(list(counts.values()))
        counts = {k: int(v) for k, v in zip(counts, totals, strict=True)}
    if out is not None and distributed.is_main():
        out.merge()
    if not distributed.is_main():
        return 1 if counts["photos"] and counts["errors"] == counts["photos"] else 0
    summary = (f"{counts['photos']} photos, {counts['errors']} unreadable, "
               f"{counts['unknown']} not one of my species, {counts['retake']} to photograph again")
    if skip:
        summary += f"; {len(skip)} already in {args.csv}"
    print(summary, file=sys.stderr)
    return 1 if counts["photos"] and counts["errors"] == counts["photos"] else 0


def _explainer(predictor: Predictor, cams: str | None) -> Explainer | None:
    if not cams:
        return None
    from monkeysee.explain import Explainer

    Path(cams).mkdir(parents=True, exist_ok=True)
    return Explainer.from_run(predictor.run, precision=predictor.precision)


def _write_cam(pred: Prediction, out: Path) -> None:
    """The heatmap of the predicted species; the name carries a hash of the full path so photos with the
    same name in different folders never overwrite each other."""
    import hashlib

    from monkeysee.explain.render import save_png

    assert pred.overlay is not None and pred.best is not None
    tag = hashlib.sha1(str(pred.source).encode(errors="surrogateescape")).hexdigest()[:8]
    save_png(pred.overlay, out / f"{Path(pred.source).stem}-{tag}.{pred.best.species.label}.png")


def _log(args: argparse.Namespace) -> int:
    """`--log DB`: every photo not yet in the log becomes a sighting with the model's answer."""
    from monkeysee.predict import Predictor
    from monkeysee.runtime import pick_device
    from monkeysee.sightings import Store
    from monkeysee.sightings.batch import log_folder

    if args.csv or args.json or args.cams:
        raise ConfigError("--log writes to the keeper's log, not with --csv, --json or --cams",
                          fix="run predict once for each")
    store = Store.open(args.log, photos=args.photos_dir)
    predictor = Predictor.from_run_dir(args.run_dir, device=str(pick_device(args.device)),
                                       precision=args.precision, unknown_threshold=args.unknown_threshold,
                                       tta=args.tta)
    counts = log_folder(store, predictor, iter_inputs(args.photos), run=str(args.run_dir), place=args.place,
                        batch_size=args.batch_size)
    print(f"{counts.logged} sightings logged, {counts.already} photos already in the log, "
          f"{counts.unreadable} unreadable", file=sys.stderr)
    return 1 if counts.unreadable and not (counts.logged or counts.already) else 0
