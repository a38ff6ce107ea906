"""Photos saved twice: files of one species with the same bytes, kept together when splits are carved.

The Kaggle monkeys hold 63 such pairs; carved file by file, 17 test photos were byte-identical copies
of training photos, so the model had seen them and the held-out figures counted them as never seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path


def digest(path: Path) -> str:
    """sha256 of the file's bytes; an unreadable file is its own group (keyed by its path)."""
    try:
        with open(path, "rb") as fp:
            return hashlib.file_digest(fp, "sha256").hexdigest()
    except OSError:
        return f"unreadable:{path}"


def copy_groups(paths: Sequence[Path]) -> list[list[Path]]:
    """`paths` grouped by identical bytes, groups in the order of their first path, paths in given order."""
    groups: dict[str, list[Path]] = {}
    for path in paths:
        groups.setdefault(digest(path), []).append(path)
    return list(groups.values())
