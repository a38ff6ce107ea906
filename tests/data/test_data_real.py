"""The real Kaggle training folder in ../shared/data, when present: every photo readable and split."""

from __future__ import annotations

from pathlib import Path

import pytest

from monkeysee.data.copies import digest
from monkeysee.data.images import load_rgb
from monkeysee.data.layout import DataIndex, scan_dataset
from monkeysee.data.species import Species

MONKEYS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "monkeys"

pytestmark = pytest.mark.slow  # reads the 1,097 real photos in ../shared/data


@pytest.fixture(scope="module")
def index() -> DataIndex:
    if not (MONKEYS / "training").is_dir():
        pytest.skip(f"real data not present at {MONKEYS}")
    return scan_dataset(MONKEYS, workers=2)


def test_all_photos_usable(index: DataIndex) -> None:
    assert len(index.species) == 10
    assert index.species[0] == Species("n0", "mantled_howler", "alouatta_palliata")
    assert index.skipped == []
    # 63 photos saved twice and one three times in the Kaggle training split: each kept in one split
    assert index.warnings == ["64 training photo(s) are byte-identical copies of another photo of their "
                              "species; each photo and its copies are kept in one split"]
    paths = {index.relative(s.path) for s in index.train + index.val + index.test}
    assert len(paths) == 1097
    assert {"training/n9/n9151jpg", "training/n9/n9160.png"} <= paths


def test_splits_are_stratified(index: DataIndex) -> None:
    assert index.val_source == "carved"
    counts = index.counts()
    for label in (s.label for s in index.species):
        n = sum(counts[split][label] for split in counts)
        # a photo and its copy move together, so a split may take one photo over its share
        assert int(n * 0.15 + 0.5) <= counts["test"][label] <= int(n * 0.15 + 0.5) + 1
        assert int(n * 0.1 + 0.5) <= counts["val"][label] <= int(n * 0.1 + 0.5) + 1
    assert 166 <= sum(counts["test"].values()) <= 176 and 110 <= sum(counts["val"].values()) <= 120


def test_no_held_out_photo_is_a_copy_of_a_training_photo(index: DataIndex) -> None:
    split_of: dict[str, set[str]] = {}
    for name in ("train", "val", "test"):
        for s in index.split(name):
            split_of.setdefault(digest(s.path), set()).add(name)
    assert len(split_of) == 1097 - 64
    assert all(len(names) == 1 for names in split_of.values())


def test_quirky_files_decode() -> None:
    if not MONKEYS.is_dir():
        pytest.skip(f"real data not present at {MONKEYS}")
    assert load_rgb(MONKEYS / "training" / "n9" / "n9151jpg").size == (580, 409)
    assert load_rgb(MONKEYS / "training" / "n9" / "n9160.png").size == (451, 334)
