"""Photos saved twice: files of one species with the same bytes, kept together when splits are carved.

The Kaggle monkeys hold 63 such pairs; carved file by file, 17 test photos were byte-identical copies
of training photos, so the model had seen them and the held-out figures counted them as never seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path


def sha256_file(path: Path) -> str:
    """sha256 of the file's bytes, in hex (OSError when it cannot be read)."""
    with open(path, "rb") as fp:
        return hashlib.file_digest(fp, "sha256").hexdigest()


def digest(path: Path) -> str:
    """`sha256_file`, with an unreadable file keyed by its path (so it is a group of its own)."""
    try:
        return sha256_file(path)
    except OSError:
        return f"unreadable:{path}"


def copy_groups(paths: Sequence[Path], digests: Mapping[Path, str] | None = None) -> list[list[Path]]:
    """`paths` grouped by identical bytes, groups in the order of their first path, paths in given order.
    `digests` (from a pass that read the files already) spares reading them again."""
    known = digests or {}
    groups: dict[str, list[Path]] = {}
    for path in paths:
        groups.setdefault(known.get(path) or digest(path), []).append(path)
    return list(groups.values())
