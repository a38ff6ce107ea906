"""`monkeysee predict`: species for photos and folders; a table for people, JSON/CSV for machines.

Folders are streamed (any number of photos), a bad file becomes an error row and the rest go on, and
`--csv` is resumable: photos already in the file are skipped, new rows are appended batch by batch.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from tqdm.auto import tqdm

from monkeysee.cli import command
from monkeysee.errors import ConfigError

if TYPE_CHECKING:
    from monkeysee.explain import Explainer
    from monkeysee.predict import Prediction, Predictor

CSV_FIELDS = ["source", "verdict", "species", "latin_name", "label", "probability", "unknown",
              "unknown_score", "quality", "top", "error"]


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


CSV_ERRORS = "surrogateescape"
"""File names that are not valid UTF-8 (drives written by other systems) go into the (UTF-8) CSV as the
same bytes, so every photo gets its row and a resumed run recognises it."""


class ResultsCsv:
    """An appendable, resumable CSV of predictions in which every row is complete.

    Each row is one unbuffered write of its whole bytes; a write that fails (a full disk) is cut back
    to the end of the last whole row before the error goes on, and opening the file again drops a row
    a crash may have cut, so a resumed run never glues a row onto a fragment.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done = self._read_done()
        self._file = self._open()
        if self._file.seek(0, 2) == 0:
            self._write({f: f for f in CSV_FIELDS})

    def _open(self) -> BinaryIO:
        return self.path.open("ab", buffering=0)

    def _read_done(self) -> set[str]:
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return set()
        _drop_cut_row(self.path)
        with self.path.open(newline="", encoding="utf-8", errors=CSV_ERRORS) as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != CSV_FIELDS:
                raise ConfigError(f"existing CSV has columns {reader.fieldnames}, not those this version "
                                  "writes, so it cannot be resumed", fix="choose a new --csv file",
                                  path=self.path)
            return {row["source"] for row in reader}

    def _write(self, row: dict[str, str]) -> None:
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=CSV_FIELDS).writerow(row)
        data = buf.getvalue().encode("utf-8", CSV_ERRORS)
        start = self._file.seek(0, 2)
        try:
            view = memoryview(data)
            while view:
                written = self._file.write(view)
                view = view[written or 0:]
        except OSError:
            self._file.truncate(start)  # never leave half a row behind
            raise

    def add(self, pred: Prediction) -> None:
        self._write(csv_row(pred))

    def flush(self) -> None:
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def _drop_cut_row(path: Path) -> None:
    """Truncate a file that does not end in a newline back to its last complete line."""
    with path.open("rb+") as f:
        size = f.seek(0, 2)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        block = min(size, 1 << 20)
        f.seek(size - block)
        tail = f.read(block)
        f.truncate(size - block + tail.rfind(b"\n") + 1 if b"\n" in tail else 0)


def csv_row(pred: Prediction) -> dict[str, str]:
    d = pred.to_dict()
    if "error" in d:
        return {"source": d["source"], "verdict": "error", "error": d["error"]}
    top = "; ".join(f"{g['common_name']} {g['probability']:.4f}" for g in d["top"])
    quality = "ok" if pred.quality is None or pred.quality.ok else "; ".join(pred.quality.problems)
    fields = {k: d.get(k, "") for k in CSV_FIELDS if k not in {"top", "error", "quality"}}
    return fields | {"quality": quality, "top": top, "error": ""}


def check_options(args: argparse.Namespace) -> None:
    """Every option checked before the model is loaded or a photo read."""
    from monkeysee.runtime import checked_precision

    for name in ("top_k", "batch_size"):
        value = getattr(args, name)
        if value < 1:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be at least 1, not {value}", fix=f"pass e.g. {flag} 32")
    checked_precision(args.precision)
    for flag, target in (("--cams", args.cams), ("--csv", args.csv)):
        if target:
            _check_writable(flag, Path(target) if flag == "--cams" else Path(target).parent)


def _check_writable(flag: str, folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} folder cannot be written ({exc.strerror})",
                          fix=f"pass a {flag} path in a folder you can write to", path=folder) from None


@command("predict", help="Name the species in photos or folders", arguments=_arguments, order=30)
def run(args: argparse.Namespace) -> int:
    from monkeysee.predict import Predictor

    check_options(args)
    predictor = Predictor.from_run_dir(args.run_dir, precision=args.precision,
                                       unknown_threshold=args.unknown_threshold)
    out = ResultsCsv(Path(args.csv)) if args.csv else None
    skip = out.done if out else set()
    paths = (p for p in iter_inputs(args.photos) if str(p) not in skip)
    explainer = _explainer(predictor, args.cams)
    counts = {"photos": 0, "errors": 0, "unknown": 0, "retake": 0}
    bar = tqdm(desc="predicting", unit="photo", disable=None if (out or args.json) else True)
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
