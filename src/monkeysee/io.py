"""Atomic file writes (torch-free): readers and resumed runs never see half a file."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path


def _temp_beside(path: Path) -> tuple[int, str]:
    """A new file next to `path`, created with mode 0o666 less the umask, as `open(path, "w")` would make
    it (`tempfile.mkstemp` makes 0o600: reports and run files that other accounts and web servers could
    not read)."""
    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`. A file replaced
    keeps its mode; a new one gets the mode the umask gives."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())
