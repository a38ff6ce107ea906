"""Choosing the photos a faithfulness evaluation runs on: N of them, spread over classes, deterministic."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import zip_longest
from pathlib import Path

from monkeysee.data.images import is_sidecar, iter_photos
from monkeysee.errors import ConfigError, DataError, MonkeyseeError
from monkeysee.rundir import RunDir


def spread(paths: Iterable[Path]) -> list[Path]:
    """Round-robin over parent folders (sorted), each folder in sorted order: classes take turns."""
    groups: dict[Path, list[Path]] = {}
    for p in sorted(paths):
        groups.setdefault(p.parent, []).append(p)
    return [p for row in zip_longest(*(groups[k] for k in sorted(groups))) for p in row if p is not None]


def held_out_photos(run_dir: str | Path, data_dir: str | Path | None = None) -> list[Path]:
    """The run's test split (else its validation split) from `splits.json`, where the run has one.

    Relative paths are resolved against `data_dir`, else the file's own `root`. Missing files are dropped.
    """
    run = RunDir(run_dir)
    if not run.has_splits():
        return []
    try:
        index = run.read_splits(data_dir)
    except MonkeyseeError:
        return []
    for name in ("test", "val"):
        found = [s.path for s in index.split(name) if s.path.is_file()]
        if found:
            return found
    return []


def candidate_photos(run_dir: str | Path | None, data_dir: str | Path | None) -> tuple[list[Path], str]:
    """Photos to evaluate on, in the order to try them, and where they came from."""
    if run_dir is not None:
        held_out = held_out_photos(run_dir, data_dir)
        if held_out:
            return spread(held_out), f"held-out split of run {run_dir}"
    if data_dir is None:
        raise ConfigError(
            "no photos to evaluate on: the run has no usable splits.json",
            fix="pass --data DIR (a folder of photos, or a Kaggle-style data set)",
        )
    photos = [p for p in iter_photos(Path(data_dir)) if not is_sidecar(p)]
    if not photos:
        raise DataError("no photos found", fix="pass a folder that holds photos", path=data_dir)
    return spread(photos), f"{data_dir}"
