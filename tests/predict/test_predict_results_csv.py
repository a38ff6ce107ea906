"""The resumable results CSV: a file is written only once it is known to be ours, one row per photo
however its path was written, error rows tried again."""

from __future__ import annotations

import csv
import os
import stat
import subprocess
from pathlib import Path

import pytest

from monkeysee.errors import ConfigError
from monkeysee.results_csv import CSV_FIELDS, ResultsCsv, check_results_file, compact, finished

HEADER = ",".join(CSV_FIELDS) + "\r\n"


def row(source: str, verdict: str = "species", species: str = "red_monkey") -> dict[str, str]:
    if verdict == "error":
        return {"source": source, "verdict": "error", "error": "cannot read"}
    return {"source": source, "verdict": verdict, "species": species}


def rows(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="") as f:
        return [(r["source"], r["verdict"]) for r in csv.DictReader(f)]


def write(path: Path, *items: dict[str, str]) -> None:
    out = ResultsCsv(path)
    for item in items:
        out.add_row(item)
    out.close()


@pytest.mark.parametrize("content", [b"name,score\nx,1\ny,2", b"name,score\nx,1\ny,2\n", b"name,sc",
                                     b"\xff\xfe\x00binary"])
def test_a_file_of_other_content_is_refused_and_left_byte_identical(tmp_path, content):
    other = tmp_path / "other.csv"
    other.write_bytes(content)
    with pytest.raises(ConfigError, match="not a monkeysee results CSV") as info:
        ResultsCsv(other)
    assert info.value.path == str(other) and "choose a new --csv file" in info.value.message
    assert other.read_bytes() == content


def test_a_header_cut_by_a_crash_is_ours_and_written_again(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(HEADER.encode()[:9])
    write(path, row("a.jpg"))
    assert path.read_bytes() == (HEADER + "a.jpg,species,red_monkey,,,,,,,,,,,\r\n").encode()


def test_a_header_ended_by_a_plain_newline_is_ours(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(",".join(CSV_FIELDS) + "\n/x/a.jpg,species,red_monkey,,,,,,,,,,,\n")
    assert ResultsCsv(path).done == {"/x/a.jpg"}


def test_a_row_cut_by_a_crash_is_dropped_before_appending(tmp_path):
    path = tmp_path / "p.csv"
    write(path, row("a.jpg"))
    whole = path.read_bytes()
    path.write_bytes(whole + b"b.jpg,spec")
    write(path, row("c.jpg"))
    assert rows(path) == [("a.jpg", "species"), ("c.jpg", "species")]


def test_the_same_photo_written_another_way_is_done(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "photos")
    path = tmp_path / "p.csv"
    write(path, row("photos/a.jpg"))
    assert ResultsCsv(path).done == {str(tmp_path / "photos" / "a.jpg")}
    write(path, row(str(tmp_path / "photos" / "a.jpg")), row("link/b.jpg"), row("photos/b.jpg"))
    compact(path)
    assert rows(path) == [(str(tmp_path / "photos" / "a.jpg"), "species"), ("photos/b.jpg", "species")]


def test_error_rows_are_tried_again_and_superseded(tmp_path):
    path = tmp_path / "p.csv"
    write(path, row("/x/a.jpg", "error"), row("/x/b.jpg"), row("/x/c.jpg", "error"))
    out = ResultsCsv(path)
    assert out.done == {"/x/b.jpg"}  # a and c are tried again
    out.add_row(row("/x/a.jpg"))  # repaired
    out.add_row(row("/x/c.jpg", "error"))  # still broken
    out.add_row(row("/x/b.jpg", "error"))  # a later failure never hides a finished row
    out.close()
    assert compact(path) == 3
    assert rows(path) == [("/x/b.jpg", "species"), ("/x/a.jpg", "species"), ("/x/c.jpg", "error")]
    assert finished(path) == {"/x/a.jpg", "/x/b.jpg"}
    assert compact(path) == 0


def test_compact_keeps_the_file_mode_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "p.csv"
    write(path, row("/x/a.jpg", "error"), row("/x/a.jpg"))
    path.chmod(0o640)
    assert compact(path) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]


def test_a_folder_is_refused_with_a_file_name_to_use(tmp_path):
    with pytest.raises(ConfigError, match="names a folder") as info:
        check_results_file(tmp_path)
    assert str(tmp_path / "predictions.csv") in info.value.message


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_a_device_is_refused_before_anything_is_written():
    with pytest.raises(ConfigError, match="device or pipe") as info:
        ResultsCsv(Path("/dev/full"))
    assert info.value.path == "/dev/full"


def test_a_pipe_is_refused(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="device or pipe"):
        check_results_file(fifo)


def test_a_read_only_file_is_refused_and_left_as_it_is(tmp_path):
    path = tmp_path / "p.csv"
    write(path, row("/x/a.jpg"))
    before = path.read_bytes()
    path.chmod(0o444)
    immutable = os.geteuid() == 0  # root writes through file modes: make the file immutable instead
    if immutable and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr +i: no file is read-only here")
    try:
        with pytest.raises(ConfigError, match="cannot be written") as info:
            ResultsCsv(path)
        assert "chmod u+w" in info.value.message and info.value.path == str(path)
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    assert path.read_bytes() == before


def test_part_files_of_a_killed_larger_run_are_merged_once_with_one_row_per_photo(tmp_path):
    from monkeysee.results_csv import ShardedCsv

    path = tmp_path / "p.csv"
    write(path, row("/x/a.jpg"), row("/x/b.jpg", "error"))
    part = tmp_path / "p.csv.part1"
    part.write_text(HEADER + "/x/b.jpg,species,red_monkey,,,,,,,,,,,\r\n"
                    "/x/c.jpg,species,red_monkey,,,,,,,,,,,\r\n"
                    "/x/d.jpg,spec")  # rank 1 was killed mid-row
    out = ShardedCsv(path)
    assert out.done == {"/x/a.jpg", "/x/b.jpg", "/x/c.jpg"}
    out.close()
    assert out.merge() == 2
    assert rows(path) == [("/x/a.jpg", "species"), ("/x/b.jpg", "species"), ("/x/c.jpg", "species")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]


def test_a_file_written_before_answers_had_a_rank_is_refused_with_the_reason_and_left_as_it_is(tmp_path):
    path = tmp_path / "old.csv"
    old = ("source,verdict,species,latin_name,label,probability,unknown,unknown_score,quality,top,error\r\n"
           "/x/a.jpg,species,red_monkey,,,,,,,,\r\n")
    path.write_bytes(old.encode())
    with pytest.raises(ConfigError, match="earlier monkeysee, without the rank, taxon") as e:
        ResultsCsv(path)
    assert "choose a new --csv file" in e.value.fix
    assert path.read_bytes() == old.encode()
