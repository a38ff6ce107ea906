"""Output paths are checked before any work and before their first byte; predict's CSV resumes one row
per photo, however the folder was written, and tries error rows again."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from monkeysee.cli import main


class Computed(AssertionError):
    """Raised by anything a refused command must not reach."""


@pytest.fixture
def no_work(monkeypatch):
    """Loading a model or a data folder fails the test: the refusal must come first."""

    def forbidden(*args, **kwargs):
        raise Computed("the command started work before refusing its output path")

    for target in ("monkeysee.predict.Predictor.from_run_dir", "monkeysee.rundir.load_run",
                   "monkeysee.train.trainer.Trainer.__init__", "monkeysee.models.create_model",
                   "monkeysee.data.layout.scan_dataset", "monkeysee.report.build_report"):
        monkeypatch.setattr(target, forbidden)


def refused(argv: list[str], capsys, *mentions: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"exit code {code}, stderr: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"monkeysee {argv[0]}: error: "), err
    assert "Fix:" in lines[0], err
    for m in mentions:
        assert m in lines[0], f"{m!r} not in {lines[0]!r}"
    return lines[0]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def photos(synthetic_data, tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted((synthetic_data / "training").rglob("*.jpg"))[:4]:
        shutil.copy(p, folder / p.name)
    return folder


@pytest.mark.parametrize("content", [b"name,score\nmonkey.jpg,0.9\nother.jpg,0.1",
                                     b"name,score\nmonkey.jpg,0.9\n"])
def test_a_foreign_csv_is_refused_before_work_and_left_byte_identical(content, tiny_run, photos, tmp_path,
                                                                     capsys, no_work):
    other = tmp_path / "other.csv"
    other.write_bytes(content)
    refused(["predict", str(tiny_run), str(photos), "--csv", str(other)], capsys,
            str(other), "not a monkeysee results CSV", "'name,score'", "choose a new --csv file")
    assert other.read_bytes() == content


@pytest.mark.parametrize(("make", "mentions"), [
    (lambda tmp: tmp, ["names a folder", "predictions.csv"]),
    (lambda tmp: Path("/dev/full"), ["/dev/full", "device or pipe", "new --csv file"]),
    (lambda tmp: (tmp / "f").write_text("x") and tmp / "f" / "out.csv", ["runs through a file"]),
], ids=["folder", "dev-full", "through-a-file"])
def test_a_csv_that_cannot_be_written_is_refused_before_work(make, mentions, tiny_run, photos, tmp_path,
                                                             capsys, no_work):
    target = make(tmp_path)
    refused(["predict", str(tiny_run), str(photos), "--csv", str(target)], capsys, *mentions)


def test_a_read_only_csv_is_refused_before_work(tiny_run, photos, tmp_path, capsys, monkeypatch):
    import subprocess

    out = tmp_path / "out.csv"
    assert main(["predict", str(tiny_run), str(photos), "--csv", str(out)]) == 0
    before = out.read_bytes()
    out.chmod(0o444)
    immutable = os.geteuid() == 0  # root writes through file modes: make the file immutable instead
    if immutable and subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr +i: no file is read-only here")
    capsys.readouterr()
    try:
        refused(["predict", str(tiny_run), str(photos), "--csv", str(out)], capsys, str(out),
                "cannot be written", "chmod u+w")
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(out)], check=True)
    assert out.read_bytes() == before


def test_the_same_folder_written_another_way_resumes_without_duplicates(tiny_run, photos, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.csv"
    assert main(["predict", str(tiny_run), "photos", "--csv", str(out)]) == 0
    assert main(["predict", str(tiny_run), str(tmp_path / "photos"), "--csv", str(out)]) == 0
    assert "0 photos, 0 unreadable" in capsys.readouterr().err.splitlines()[-1]
    assert sorted(r["source"] for r in rows(out)) == sorted(f"photos/{p.name}" for p in photos.iterdir())


def test_a_photo_repaired_after_an_error_gets_its_prediction_in_place_of_the_error(tiny_run, photos,
                                                                                     tmp_path, capsys):
    victim = sorted(photos.iterdir())[1]
    whole = victim.read_bytes()
    victim.write_bytes(whole[:200])  # a cut download
    out = tmp_path / "out.csv"
    main(["predict", str(tiny_run), str(photos), "--csv", str(out)])
    assert [r["verdict"] == "error" for r in rows(out)] == [False, True, False, False]
    victim.write_bytes(whole)  # downloaded again
    assert main(["predict", str(tiny_run), str(photos), "--csv", str(out)]) == 0
    assert "1 photos, 0 unreadable" in capsys.readouterr().err.splitlines()[-1]
    final = rows(out)
    assert sorted(r["source"] for r in final) == sorted(str(p) for p in photos.iterdir())
    assert all(r["verdict"] != "error" and r["species"] for r in final)


def test_an_empty_folder_is_refused_with_its_name(tiny_run, tmp_path, capsys, no_work):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    refused(["predict", str(tiny_run), str(empty)], capsys, str(empty), "no photos found")


@pytest.mark.parametrize("argv", [
    ["predict", "RUN", "PHOTOS", "--cams", "FILE"],
    ["explain", "RUN", "PHOTOS", "--out", "FILE"],
    ["activations", "RUN", "PHOTOS", "--out", "FILE"],
    ["demo", "--out", "FILE"],
    ["train", "--data", "PHOTOS", "--out", "FILE"],
    ["train", "--data", "PHOTOS", "--out", "NEW", "--store", "FILE"],
], ids=lambda argv: f"{argv[0]}{argv[-2]}")
def test_an_output_folder_naming_an_existing_file_is_refused_before_work(argv, tiny_run, photos, tmp_path,
                                                                         capsys, no_work):
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    names = {"RUN": str(tiny_run), "PHOTOS": str(photos), "FILE": str(existing), "NEW": str(tmp_path / "n")}
    argv = [names.get(a, a) for a in argv]
    refused(argv, capsys, str(existing), "names an existing file", "is the folder to write into")
    assert existing.read_text() == "mine" and not (tmp_path / "n").exists()


@pytest.mark.parametrize("argv", [
    ["report", "RUN", "--out", "DIR"],
    ["augment-preview", "--data", "PHOTOS", "--out", "DIR"],
], ids=["report", "augment-preview"])
def test_an_output_file_naming_a_folder_is_refused_before_work(argv, tiny_run, photos, tmp_path, capsys,
                                                               no_work):
    names = {"RUN": str(tiny_run), "PHOTOS": str(photos), "DIR": str(tmp_path)}
    refused([names.get(a, a) for a in argv], capsys, str(tmp_path), "names a folder", "pass a file name")
