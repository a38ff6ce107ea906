"""A crash-safe, resumable CSV of predictions, and its sharded form for `torchrun`.

Every row is complete: each is one unbuffered write of its whole bytes, a write that fails (a full disk)
is cut back to the end of the last whole row, and opening the file again drops a row a crash may have
cut. A file is only ever written once it is known to be a results file of these columns (or new).

A photo counts as done when it has a row without an error, keyed by its absolute path with symlinks
resolved, so the same folder written another way (`photos`, `$PWD/photos`) is not predicted twice. A
photo whose row is an error is tried again; `compact` then keeps one row per photo (its last finished
row, else its last error).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from monkeysee.errors import ConfigError

if TYPE_CHECKING:
    from monkeysee.predict import Prediction

CSV_FIELDS = ["source", "verdict", "species", "latin_name", "label", "probability", "unknown",
              "unknown_score", "quality", "top", "error", "rank", "taxon", "taxon_probability"]

CSV_ERRORS = "surrogateescape"
"""File names that are not valid UTF-8 (drives written by other systems) go into the (UTF-8) CSV as the
same bytes, so every photo gets its row and a resumed run recognises it."""

_HEADER = ",".join(CSV_FIELDS).encode() + b"\r\n"
_ANSWER_FIELDS = ("rank", "taxon", "taxon_probability")
_BEFORE_LADDER = ",".join(f for f in CSV_FIELDS if f not in _ANSWER_FIELDS).encode()
"""The header of results files written before answers had a rank and taxon."""


def source_key(source: str | Path) -> str:
    """The photo a row is about, however its path was written: absolute, symlinks resolved."""
    return os.path.realpath(source)


def csv_row(pred: Prediction) -> dict[str, str]:
    d = pred.to_dict()
    if "error" in d:
        return {"source": d["source"], "verdict": "error", "error": d["error"]}
    top = "; ".join(f"{g['common_name']} {g['probability']:.4f}" for g in d["top"])
    quality = "ok" if pred.quality is None or pred.quality.ok else "; ".join(pred.quality.problems)
    fields = {k: "" if d.get(k) is None else d[k] for k in CSV_FIELDS if k not in {"top", "error", "quality"}}
    return fields | {"quality": quality, "top": top, "error": ""}


def check_results_file(path: Path, flag: str = "--csv") -> None:
    """Refuse, touching nothing, an existing path that cannot be written or resumed as a results CSV: a
    folder, a device or pipe, a file that cannot be written, a file with other content."""
    if path.is_dir():
        raise ConfigError(f"{flag} names a folder, not a file", path=path,
                          fix=f"pass a file inside it, e.g. {flag} {path / 'predictions.csv'}")
    if not path.exists():
        return
    fix = f"pass a new {flag} file name"
    if not stat.S_ISREG(path.stat().st_mode):
        raise ConfigError(f"{flag} names a device or pipe, not a file that can be resumed", path=path,
                          fix=fix)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
    except OSError as exc:
        raise ConfigError(f"{flag} file cannot be written ({exc.strerror})", path=path,
                          fix=f"make it writable (chmod u+w) or {fix}") from None
    _check_own_header(path, flag)


def _check_own_header(path: Path, flag: str) -> None:
    """A non-empty file must start with this version's header (or a crash-cut part of it)."""
    with path.open("rb") as f:
        head = f.read(len(_HEADER) + 1)
    line, newline, _ = head.partition(b"\n")
    first = line.rstrip(b"\r")
    if (first == _HEADER.rstrip(b"\r\n")) if newline else _HEADER.startswith(head):
        return
    if first == _BEFORE_LADDER:
        raise ConfigError("existing file was written by an earlier monkeysee, without the rank, taxon and "
                          "taxon_probability columns, so it was left as it is", path=path,
                          fix=f"choose a new {flag} file (the old one keeps its rows)")
    shown = first.decode("utf-8", "replace")
    raise ConfigError(f"existing file is not a monkeysee results CSV (it starts {shown[:60]!r}, not "
                      f"{_HEADER.decode().strip()!r}), so it was left as it is", path=path,
                      fix=f"choose a new {flag} file")


class ResultsCsv:
    """An appendable, resumable CSV of predictions in which every row is complete.

    `done` holds the keys (`source_key`) of photos with a finished row; photos whose row is an error
    are not in it, so they are tried again.
    """

    def __init__(self, path: Path) -> None:
        check_results_file(path)
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = set()
        if path.is_file() and path.stat().st_size:
            _drop_cut_row(path)
            keep, count = _chosen_rows(path)  # one read: the rows to keep say which photos are done
            _compact(path, keep, count)
            self.done = _finished(keep)
        self._file = self._open()
        if self._file.seek(0, 2) == 0:
            self._write({f: f for f in CSV_FIELDS})

    def _open(self) -> BinaryIO:
        return self.path.open("ab", buffering=0)

    def _write(self, row: dict[str, str]) -> None:
        data = _encode(row)
        start = self._file.seek(0, 2)
        try:
            view = memoryview(data)
            while view:
                written = self._file.write(view)
                view = view[written or 0:]
        except OSError as exc:
            with contextlib.suppress(OSError):  # the write's own error is the one that says what happened
                self._file.truncate(start)  # never leave half a row behind
            if exc.filename is None:
                raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
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


def finished(path: Path) -> set[str]:
    """The keys of the photos a results file holds a finished (not error) row for."""
    return _finished(_chosen_rows(path)[0])


def compact(path: Path) -> int:
    """Keep one row per photo: its last finished row, else its last error row. The file is replaced in one
    rename, so a crash leaves either the old or the new file; returns the rows dropped."""
    return _compact(path, *_chosen_rows(path))


def _chosen_rows(path: Path) -> tuple[dict[str, tuple[int, bool]], int]:
    """Per photo key, the row `compact` keeps (its index, whether it is finished); and the rows read."""
    keep: dict[str, tuple[int, bool]] = {}
    count = 0
    for i, row in enumerate(read_rows(path)):
        ok = row["verdict"] != "error"
        key = source_key(row["source"])
        if key not in keep or ok or not keep[key][1]:
            keep[key] = (i, ok)
        count = i + 1
    return keep, count


def _finished(keep: dict[str, tuple[int, bool]]) -> set[str]:
    return {key for key, (_, ok) in keep.items() if ok}


def _compact(path: Path, keep: dict[str, tuple[int, bool]], count: int) -> int:
    chosen = {i for i, _ in keep.values()}
    if len(chosen) == count:
        return 0
    real = Path(os.path.realpath(path))
    fd, temp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(_HEADER)
            for i, row in enumerate(read_rows(path)):
                if i in chosen:
                    out.write(_encode(row))
            out.flush()
            os.fsync(out.fileno())
        shutil.copymode(real, temp)
        os.replace(temp, real)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return count - len(chosen)


class ShardedCsv:
    """The `--csv` of one rank: rank 0 writes the CSV itself, rank r > 0 the part file `CSV.partR`.

    `done` is every photo finished in the CSV or in any part file (of this or an earlier, killed run of
    any world size). `merge()`, after every rank has closed its file, appends the part files' rows
    that the CSV lacks, removes them and compacts the CSV; a kill during it leaves them to be merged
    again, never a row twice.
    """

    def __init__(self, path: Path) -> None:
        from monkeysee import distributed

        self.path = path
        rank, world = distributed.rank(), distributed.size()
        own = path if rank == 0 else self.part(rank)
        if rank == 0:  # parts nobody owns now (an earlier run had more ranks): drop a cut row for them
            for orphan in self.parts():
                if orphan != own and _part_rank(orphan) >= world and orphan.stat().st_size:
                    check_results_file(orphan)
                    _drop_cut_row(orphan)
        self.own = ResultsCsv(own)  # drops its own cut row, writes the header
        distributed.barrier()  # every file now holds whole rows only
        self.done = set(self.own.done)
        for other in [path, *self.parts()]:
            if other != own and other.is_file():
                self.done |= finished(other)
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
        """Rank 0, once every rank closed its file: the part files' new rows into the CSV, then one row
        per photo; the rows added."""
        parts = self.parts()
        added = 0
        if parts:
            out = ResultsCsv(self.path)
            try:
                for part in parts:
                    for row in read_rows(part):
                        key = source_key(row["source"])
                        if key not in out.done:
                            out.add_row(row)
                            if row["verdict"] != "error":
                                out.done.add(key)
                            added += 1
                out.flush()
            finally:
                out.close()
            for part in parts:
                part.unlink()
        compact(self.path)
        return added


def _encode(row: dict[str, str]) -> bytes:
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=CSV_FIELDS).writerow(row)
    return buf.getvalue().encode("utf-8", CSV_ERRORS)


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
