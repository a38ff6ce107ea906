"""Defects found by trying to break it: odd file names, a full disk, damaged or foreign checkpoint files,
an unreadable subfolder. Each is reproduced, then shown to end in a clear error or a finished batch."""

from __future__ import annotations

import csv
import errno
import os
import shutil
from pathlib import Path

import pytest

from monkeysee.cli import main
from monkeysee.errors import CheckpointError
from monkeysee.predict import Predictor
from monkeysee.results_csv import CSV_FIELDS, ResultsCsv
from monkeysee.rundir import UNKNOWN, WEIGHTS, RunDir


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
    real_open = ResultsCsv._open
    header = len(",".join(CSV_FIELDS)) + 2
    monkeypatch.setattr(ResultsCsv, "_open",
                        lambda self: _FullDisk(real_open(self), header + 400))
    assert main(["predict", str(tiny_run), str(folder), "--csv", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"disk full writing {out}. Fix: free space and rerun the same command" in err
    assert "Traceback" not in err
    written = out.read_bytes()
    assert written.endswith(b"\n") and len(_rows(out)) >= 1  # whole rows only: no fragment to glue onto
    assert all(len(r) == len(CSV_FIELDS) and None not in r.values() for r in _rows(out))
    monkeypatch.setattr(ResultsCsv, "_open", real_open)
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


@pytest.mark.parametrize(("name", "damage", "expected"), [
    (UNKNOWN, lambda p: p.write_bytes(p.read_bytes()[:-4]), "unknown.safetensors does not match manifest"),
    (UNKNOWN, lambda p: p.unlink(), "unknown.safetensors is missing"),
    (WEIGHTS, lambda p: p.write_bytes(p.read_bytes()[:-10]), "model.safetensors does not match manifest"),
])
def test_a_damaged_checkpoint_file_is_named(tiny_run, tmp_path, name, damage, expected):
    run = _copy_run(tiny_run, tmp_path)
    damage(run / name)
    with pytest.raises(CheckpointError, match=expected) as info:
        Predictor.from_run_dir(run)
    assert info.value.path == str(run / name)


def test_a_detector_from_another_run_is_refused(tiny_run, tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    run = _copy_run(tiny_run, tmp_path)
    save_file({"unknown.bank": np.ones((4, 8), dtype=np.float32)}, str(run / UNKNOWN))  # another run's
    with pytest.raises(CheckpointError, match="from another run"):
        Predictor.from_run_dir(run)


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


def test_training_on_a_file_name_that_is_not_utf8_and_a_full_disk_then_resume(synthetic_data, tmp_path,
                                                                             monkeypatch, capsys):
    import monkeysee.io

    data = Path(shutil.copytree(synthetic_data, tmp_path / "data"))
    n0 = data / "training" / "n0"
    shutil.copy(next(n0.iterdir()), n0 / os.fsdecode(b"caf\xe9.jpg"))  # Latin-1 name from another system
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--views", "1", "--head-epochs", "3",
            "--finetune-epochs", "1", "--workers", "0", "--unknown-detector", "energy", "--no-evaluate"]
    real_fsync, calls = monkeysee.io.os.fsync, []

    def full_after_a_while(fd: int) -> None:
        calls.append(fd)
        if len(calls) > 8:  # splits, summary and the first epochs are on disk; then the disk fills
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(monkeysee.io.os, "fsync", full_after_a_while)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "disk full" in err and "free space and rerun the same command" in err and "Traceback" not in err
    monkeypatch.setattr(monkeysee.io.os, "fsync", real_fsync)
    assert not out.exists()  # the disk filled before the first epoch was saved: the start left nothing
    assert main(args) == 0  # the same command, as the error says
    index = RunDir(out).read_splits()
    every = {s.path for s in index.train + index.val + index.test}
    assert n0 / os.fsdecode(b"caf\xe9.jpg") in every  # the odd name is a photo like any other
    assert RunDir(out).is_finished()
