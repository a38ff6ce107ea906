"""`predict --csv` on hostile ground: a file name that is not UTF-8, a disk that fills, a row cut by a power
failure, an unreadable subfolder, a damaged run. Each ends in a clear one-line error or a finished batch
with one whole row per photo."""

from __future__ import annotations

import csv
import errno
import os
import shutil
from pathlib import Path

from monkeysee.cli import main
from monkeysee.results_csv import CSV_FIELDS
from monkeysee.rundir import UNKNOWN


def _folder(synthetic_data: Path, tmp_path: Path, n: int = 6) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted((synthetic_data / "training").rglob("*.jpg"))[:n]:
        shutil.copy(p, folder / p.name)
    return folder


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="", encoding="utf-8", errors="surrogateescape") as f:
        return list(csv.DictReader(f))


def _copy_run(tiny_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def test_a_file_name_that_is_not_utf8_gets_its_row_and_resumes(tiny_run, synthetic_data, tmp_path, capsys):
    folder = _folder(synthetic_data, tmp_path, 2)
    odd = folder / os.fsdecode(b"\xff\xfemonkey.jpg")  # Latin-1 bytes from another system's drive
    shutil.copy(next(folder.iterdir()), odd)
    out = tmp_path / "out.csv"
    assert main(["predict", str(tiny_run), str(folder), "--csv", str(out)]) == 0
    rows = _rows(out)
    assert len(rows) == 3 and str(odd) in {r["source"] for r in rows}
    assert all(r["verdict"] in {"species", "unknown", "retake"} for r in rows)
    assert main(["predict", str(tiny_run), str(folder), "--csv", str(out)]) == 0  # resumed: nothing new
    assert len(_rows(out)) == 3
    assert "3 already in" in capsys.readouterr().err
    assert main(["predict", str(tiny_run), str(odd)]) == 0  # the table prints it, escaped
    assert "\\xff\\xfemonkey.jpg" in capsys.readouterr().out


class _FullDisk:
    """A raw file that takes `room` more bytes, then fails with ENOSPC after writing half of a write."""

    def __init__(self, real, room: int) -> None:
        self.real, self.room = real, room

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self.real.write(data[: max(1, self.room // 2)])
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.real.write(data)

    def __getattr__(self, name: str):
        return getattr(self.real, name)


def test_a_full_disk_leaves_whole_rows_says_so_and_the_rerun_finishes(tiny_run, synthetic_data, tmp_path,
                                                                      monkeypatch, capsys):
    folder = _folder(synthetic_data, tmp_path, 6)
    out = tmp_path / "out.csv"
    header = len(",".join(CSV_FIELDS)) + 2
    real_open = Path.open

    def open_on_a_full_disk(self: Path, mode: str = "r", *args, **kwargs):
        f = real_open(self, mode, *args, **kwargs)
        return _FullDisk(f, header + 400) if self == out and "a" in mode else f

    monkeypatch.setattr(Path, "open", open_on_a_full_disk)
    assert main(["predict", str(tiny_run), str(folder), "--csv", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"disk full writing {out}. Fix: free space and rerun the same command" in err
    assert "Traceback" not in err
    written = out.read_bytes()
    assert written.endswith(b"\n") and len(written) <= header + 400  # whole rows: no fragment to glue onto
    assert 1 <= len(_rows(out)) < 6
    assert all(len(r) == len(CSV_FIELDS) and None not in r.values() for r in _rows(out))
    monkeypatch.setattr(Path, "open", real_open)
    assert main(["predict", str(tiny_run), str(folder), "--csv", str(out)]) == 0
    sources = [r["source"] for r in _rows(out)]
    assert sorted(sources) == sorted(str(p) for p in folder.iterdir())  # every photo once


def test_a_cut_last_row_is_dropped_before_resuming(tiny_run, synthetic_data, tmp_path):
    folder = _folder(synthetic_data, tmp_path, 3)
    out = tmp_path / "out.csv"
    assert main(["predict", str(tiny_run), str(folder), "--csv", str(out)]) == 0
    whole = out.read_bytes()
    out.write_bytes(whole[: len(whole) - 7])  # a power cut in the middle of the last row
    assert main(["predict", str(tiny_run), str(folder), "--csv", str(out)]) == 0
    assert out.read_bytes().endswith(b"\n")
    assert sorted(r["source"] for r in _rows(out)) == sorted(str(p) for p in folder.iterdir())  # once each


def test_predict_reports_a_damaged_run_in_one_line(tiny_run, synthetic_data, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path)
    (run / UNKNOWN).write_bytes(b"")
    photo = next((synthetic_data / "training").rglob("*.jpg"))
    assert main(["predict", str(run), str(photo)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown.safetensors" in err and "Fix:" in err


def test_an_unreadable_subfolder_is_one_error_row_and_the_batch_goes_on(tiny_run, synthetic_data, tmp_path,
                                                                        monkeypatch, capsys):
    folder = _folder(synthetic_data, tmp_path, 3)
    locked = folder / "lost+found"
    locked.mkdir()
    real = os.scandir

    def scandir(path=".", *args, **kwargs):
        if Path(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)  # root ignores chmod, so the refusal is simulated
    out = tmp_path / "out.csv"
    assert main(["predict", str(tiny_run), str(folder), "--csv", str(out)]) == 0
    rows = _rows(out)
    assert len(rows) == 4
    errors = [r for r in rows if r["verdict"] == "error"]
    assert len(errors) == 1 and "lost+found" in errors[0]["source"]
