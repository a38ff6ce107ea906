"""`monkeysee predict`: species for photos and folders; a table for people, JSON/CSV for machines.

Folders are streamed (any number of photos), a bad file becomes an error row and the rest go on, and
`--csv` is resumable: photos already in the file are skipped, new rows are appended batch by batch.

Under `torchrun` each rank predicts every `WORLD_SIZE`-th photo of the listing (from its `RANK`),
rank 0 into the CSV itself and the others into part files beside it (`out.csv.part1`, ...), which
rank 0 appends to the CSV and removes at the end. A photo in the CSV or any part file counts as done,
so a killed run resumes with any number of processes, one included.
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
    p.add_argument("--tta", metavar="VIEW,...", type=_views, default=[],
                   help="test-time augmentation: also look at these comma-separated views and average "
                        "(hflip, zoom); costs one more pass per view; not with --cams")
    p.add_argument("--precision", default="auto", help="auto, bf16 or fp32")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto; under torchrun a rank's "
                   "cuda is its cuda:LOCAL_RANK")


def _views(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


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

    def add_row(self, row: dict[str, str]) -> None:
        """A row as read from another results file (a rank's part file)."""
        self._write(row)

    def flush(self) -> None:
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_rows(path: Path) -> Iterator[dict[str, str]]:
    """The rows of a results file that holds only complete rows (its writer opened it already)."""
    with path.open(newline="", encoding="utf-8", errors=CSV_ERRORS) as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is not None and reader.fieldnames != CSV_FIELDS:
            raise ConfigError(f"results file has columns {reader.fieldnames}, not those this version writes",
                              fix="choose a new --csv file", path=path)
        yield from reader


class ShardedCsv:
    """The `--csv` of one rank: rank 0 writes the CSV itself, rank r > 0 the part file `CSV.partR`.

    `done` is every source in the CSV and in all part files (of this or an earlier, killed run of any
    world size). `merge()`, after every rank has closed its file, appends the part files' rows that the
    CSV lacks and removes them; a kill during it leaves them to be merged again, never a row twice.
    """

    def __init__(self, path: Path) -> None:
        from monkeysee import distributed

        self.path = path
        rank, world = distributed.rank(), distributed.size()
        own = path if rank == 0 else self.part(rank)
        if rank == 0:  # parts nobody owns now (an earlier run had more ranks): drop a cut row for them
            for orphan in self.parts():
                if orphan != own and _part_rank(orphan) >= world and orphan.stat().st_size:
                    _drop_cut_row(orphan)
        self.own = ResultsCsv(own)  # drops its own cut row, writes the header
        distributed.barrier()  # every file now holds whole rows only
        self.done = set(self.own.done)
        for other in [path, *self.parts()]:
            if other != own and other.is_file():
                self.done.update(row["source"] for row in read_rows(other))
        distributed.barrier()  # all have read before anyone appends

    def part(self, rank: int) -> Path:
        return self.path.with_name(f"{self.path.name}.part{rank}")

    def parts(self) -> list[Path]:
        return sorted(self.path.parent.glob(f"{self.path.name}.part*"), key=_part_rank)

    def add(self, pred: Prediction) -> None:
        self.own.add(pred)

    def flush(self) -> None:
        self.own.flush()

    def close(self) -> None:
        self.own.flush()
        self.own.close()

    def merge(self) -> int:
        """Rank 0, once every rank closed its file: the part files' new rows into the CSV; rows added."""
        parts = self.parts()
        if not parts:
            return 0
        out = ResultsCsv(self.path)
        added = 0
        try:
            for part in parts:
                for row in read_rows(part):
                    if row["source"] not in out.done:
                        out.add_row(row)
                        out.done.add(row["source"])
                        added += 1
            out.flush()
        finally:
            out.close()
        for part in parts:
            part.unlink()
        return added


def _part_rank(path: Path) -> int:
    tail = path.name.rsplit(".part", 1)[-1]
    return int(tail) if tail.isdigit() else 1 << 30


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
    from monkeysee.predict import TTA_VIEWS

    for name in args.tta:
        TTA_VIEWS.check(name)
    if args.tta and args.cams:
        raise ConfigError("--cams explains the photo as taken, while --tta answers for several views",
                          fix="drop --tta to draw heatmaps, or --cams to average views")
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
    from monkeysee import distributed
    from monkeysee.predict import Predictor
    from monkeysee.runtime import pick_device

    check_options(args)
    device = distributed.start(pick_device(args.device))
    predictor = Predictor.from_run_dir(args.run_dir, device=str(device), precision=args.precision,
                                       unknown_threshold=args.unknown_threshold, tta=args.tta)
    out = ShardedCsv(Path(args.csv)) if args.csv else None
    skip = out.done if out else set()
    rank, world = distributed.rank(), distributed.size()
    # The share is taken from the whole listing before skipping, so it never depends on what is done.
    paths = (p for i, p in enumerate(iter_inputs(args.photos)) if i % world == rank and str(p) not in skip)
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
