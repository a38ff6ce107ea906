"""Atomic writes: the whole file or none, and the file mode a plain write would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from monkeysee.io import atomic_write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_file_gets_the_mode_the_umask_gives(tmp_path: Path, umask_022) -> None:
    path = tmp_path / "report" / "report.html"
    atomic_write_text(path, "<html></html>")
    assert path.read_text() == "<html></html>"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # 0o666 less the umask, as open(path, "w") gives
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temporary file left


def test_a_replaced_file_keeps_its_mode(tmp_path: Path, umask_022) -> None:
    path = tmp_path / "manifest.json"
    path.write_text("{}")
    path.chmod(0o640)
    atomic_write_text(path, '{"a": 1}')
    assert path.read_text() == '{"a": 1}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "splits.json"
    path.write_text("old")

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["splits.json"]
