"""Tiny photo folders built in tmp_path, so data tests run anywhere in well under a second each."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from PIL import Image

PhotoWriter = Callable[..., Path]
DatasetMaker = Callable[..., Path]


def write_photo(path: Path, size: tuple[int, int] = (12, 10), color: int = 0, fmt: str = "JPEG") -> Path:
    """A small photo whose pixels depend on `color`, so different photos have different bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    c = color % 256
    Image.new("RGB", size, (c, 255 - c, (c * 7) % 256)).save(path, format=fmt)
    return path


@pytest.fixture
def photo() -> PhotoWriter:
    return write_photo


@pytest.fixture
def make_dataset(tmp_path: Path) -> DatasetMaker:
    """Build `root/<prefix>/<label>/<label>_<i>.jpg` for {label: count}; returns root."""

    def make(
        counts: Mapping[str, int],
        root: Path | None = None,
        prefix: str = "",
        labels_text: str | None = None,
    ) -> Path:
        root = root or tmp_path / "data"
        base = root / prefix if prefix else root
        for label, n in counts.items():
            (base / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                write_photo(base / label / f"{label}_{i:03d}.jpg", color=i)
        if labels_text is not None:
            (root / "monkey_labels.txt").write_text(labels_text, encoding="utf-8")
        return root

    return make
