"""`monkeysee predict`: species for photos and folders; a table for people, JSON/CSV for machines.

Folders are streamed (any number of photos), a bad file becomes an error row and the rest go on, and
`--csv` is resumable: photos already in the file are skipped, new rows are appended batch by batch.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from monkeysee.cli import command
from monkeysee.errors import ConfigError

if TYPE_CHECKING:
    from monkeysee.explain import Explainer
    from monkeysee.predict import Prediction, Predictor

CSV_FIELDS = ["source", "species", "latin_name", "label", "probability", "unknown", "unknown_score",
              "top", "error"]


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `monkeysee train`")
    p.add_argument("photos", metavar="PHOTO", nargs="+", help="photos and/or folders (walked recursively)")
    p.add_argument("--top-k", type=int, default=3, help="species listed per photo (default 3)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object per photo (JSON Lines)")
    out.add_argument("--csv", metavar="FILE", help="write rows to FILE; an existing FILE is resumed")
    p.add_argument("--cams", metavar="DIR", help="also write a Grad-CAM overlay per photo into DIR")
    p.add_argument("--unknown-threshold", type=float, help="override the calibrated unknown threshold")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="auto", help="auto, bf16 or fp32")


def iter_inputs(items: Iterable[str]) -> Iterator[Path]:
    """Files as given, folders walked; a path that does not exist is passed on to become an error row."""
    from monkeysee.data.images import iter_photos

    for item in items:
        path = Path(item)
        if path.is_dir():
            yield from iter_photos(path)
        else:
            yield path


def done_sources(csv_path: Path) -> set[str]:
    """Sources already written to a CSV by an earlier (maybe interrupted) run."""
    if not csv_path.is_file():
        return set()
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "source" not in reader.fieldnames:
            raise ConfigError("existing CSV has no 'source' column, so it cannot be resumed",
                              fix="choose a new --csv file", path=csv_path)
        return {row["source"] for row in reader}


def csv_row(pred) -> dict[str, str]:
    d = pred.to_dict()
    if "error" in d:
        return {"source": d["source"], "error": d["error"]}
    top = "; ".join(f"{g['common_name']} {g['probability']:.4f}" for g in d["top"])
    return {k: d.get(k, "") for k in CSV_FIELDS if k not in {"top", "error"}} | {"top": top, "error": ""}


@command("predict", help="Name the species in photos or folders", arguments=_arguments, order=30)
def run(args: argparse.Namespace) -> int:
    from monkeysee.predict import Predictor

    predictor = Predictor.from_run_dir(args.run_dir, precision=args.precision,
                                       unknown_threshold=args.unknown_threshold)
    csv_path = Path(args.csv) if args.csv else None
    skip = done_sources(csv_path) if csv_path else set()
    paths = (p for p in iter_inputs(args.photos) if str(p) not in skip)
    writer = csv_file = None
    if csv_path:
        new = not csv_path.is_file() or csv_path.stat().st_size == 0
        csv_file = csv_path.open("a", newline="")
        writer = csv.DictWriter(csv_file, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
    explainer = _explainer(predictor, args.cams)
    counts = {"photos": 0, "errors": 0, "unknown": 0}
    bar = tqdm(desc="predicting", unit="photo", disable=None if (csv_path or args.json) else True)
    try:
        for pred in predictor.predict_paths(paths, args.top_k, args.batch_size, heatmaps=explainer):
            counts["photos"] += 1
            counts["errors"] += pred.error is not None
            counts["unknown"] += pred.unknown
            if writer is not None:
                writer.writerow(csv_row(pred))
            elif args.json:
                print(json.dumps(pred.to_dict()), flush=True)
            else:
                print(pred.line(), flush=True)
            if pred.overlay is not None:
                _write_cam(pred, Path(args.cams))
            if csv_file is not None and counts["photos"] % args.batch_size == 0:
                csv_file.flush()
            bar.update(1)
    finally:
        bar.close()
        if csv_file is not None:
            csv_file.close()
    summary = (f"{counts['photos']} photos, {counts['errors']} unreadable, "
               f"{counts['unknown']} not one of my species")
    if skip:
        summary += f"; {len(skip)} already in {csv_path}"
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
