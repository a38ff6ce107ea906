"""Checks on a command's output paths, made before any work and before anything is written: a clear
error naming the path and the fix instead of a traceback after minutes of work."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

from monkeysee.errors import ConfigError

Check = Callable[[str, Path], None]
"""A check of one output path: (flag, path); raises ConfigError, writes nothing."""


def declare_outputs(parser: argparse.ArgumentParser, **checks: Check) -> None:
    """Mark options of a command as output paths (by dest name); `check_outputs` runs their checks
    before the command does any work."""
    known = parser.get_default("_outputs") or {}
    parser.set_defaults(_outputs={**known, **checks})


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path a command declared and was given, checked before the command runs."""
    for dest, check in (getattr(args, "_outputs", None) or {}).items():
        value = getattr(args, dest, None)
        if value is not None:
            check("--" + dest.replace("_", "-"), Path(value))


def check_folder(flag: str, path: Path) -> None:
    """An output folder: it may exist (as a folder) or not yet; it must not be a file, and its nearest
    existing folder must take new files."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} names an existing file, but it is the folder to write into", path=path,
                          fix=f"pass a {flag} folder that is not a file, e.g. {path.with_suffix('')}-out")
    _check_writable(flag, path)


def check_file(flag: str, path: Path) -> None:
    """An output file written whole (an existing one is replaced): it must not be a folder, and its
    folder must take new files."""
    if path.is_dir():
        raise ConfigError(f"{flag} names a folder, but it is the file to write", path=path,
                          fix=f"pass a file name, e.g. {flag} {path / 'out'}")
    _check_writable(flag, path.parent)


def _check_writable(flag: str, path: Path) -> None:
    folder = path
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{flag} path runs through a file, {folder}", path=path,
                          fix=f"pass a {flag} path whose folders are folders")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} cannot be written: {folder} takes no new files ({exc.strerror})",
                          path=path, fix=f"pass a {flag} path in a folder you can write to") from None
