"""scan_dataset: layouts, species names, unreadable files, stratified seeded splits, fingerprints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from monkeysee.data import layout
from monkeysee.data.layout import DataIndex, Sample, scan_dataset
from monkeysee.data.species import Species
from monkeysee.errors import ConfigError, DataError

LABELS = "Label, Latin Name, Common Name, Train Images\r\nn0, alouatta_palliata\t, mantled_howler, 3\r\n"


def _rel(index: DataIndex, samples: list[Sample]) -> list[str]:
    return [index.relative(s.path) for s in samples]


def _splits(index: DataIndex) -> dict[str, list[str]]:
    return {name: _rel(index, index.split(name)) for name in layout.SPLITS}


# --- layouts ---


def test_kaggle_layout_with_validation_folder(make_dataset) -> None:
    root = make_dataset({"n1": 20, "n0": 10}, prefix="training")
    make_dataset({"n0": 2, "n1": 3}, root=root, prefix="validation")
    (root / "monkey_labels.txt").write_text(LABELS)
    index = scan_dataset(root, test_fraction=0.15, workers=2)
    assert index.val_source == "folder"
    assert [s.label for s in index.species] == ["n0", "n1"]
    assert index.species[0] == Species("n0", "mantled_howler", "alouatta_palliata")
    assert index.species[1] == Species("n1", "n1", "")  # not in the labels file: folder name
    # test is carved from training (round(10*.15)=2, round(20*.15)=3); val is the folder, untouched
    assert index.counts() == {
        "train": {"n0": 8, "n1": 17},
        "val": {"n0": 2, "n1": 3},
        "test": {"n0": 2, "n1": 3},
    }
    assert all(p.startswith("validation/") for p in _rel(index, index.val))
    assert all(p.startswith("training/") for p in _rel(index, index.train + index.test))
    assert {s.target for s in index.val if "/n1/" in s.path.as_posix()} == {1}
    assert any("n1 missing from monkey_labels.txt" in w for w in index.warnings)


def test_folder_per_class_layout_carves_validation(make_dataset) -> None:
    root = make_dataset({"capuchin": 20, "howler": 10, "tamarin": 3})
    index = scan_dataset(root, val_fraction=0.1, test_fraction=0.15, workers=2)
    assert index.val_source == "carved"
    assert [s.common_name for s in index.species] == ["capuchin", "howler", "tamarin"]
    # per class: test = round(n*.15) (half up), val = round(n*.1), each at least 1 once n >= 3
    assert index.counts() == {
        "train": {"capuchin": 15, "howler": 7, "tamarin": 1},
        "val": {"capuchin": 2, "howler": 1, "tamarin": 1},
        "test": {"capuchin": 3, "howler": 2, "tamarin": 1},
    }
    everything = _rel(index, index.train + index.val + index.test)
    assert len(everything) == len(set(everything)) == 33
    assert index.warnings == []


def test_zero_test_fraction_gives_empty_test(make_dataset) -> None:
    index = scan_dataset(make_dataset({"a": 10, "b": 10}), val_fraction=0.2, test_fraction=0.0, workers=1)
    assert index.test == []
    assert index.counts()["val"] == {"a": 2, "b": 2}


def test_tiny_class_stays_in_training_with_a_warning(make_dataset) -> None:
    index = scan_dataset(make_dataset({"big": 10, "tiny": 2}), workers=1)
    assert index.counts()["train"]["tiny"] == 2
    assert index.counts()["val"]["tiny"] == index.counts()["test"]["tiny"] == 0
    assert len(index.warnings) == 1
    assert "class tiny has only 2 usable photo(s)" in index.warnings[0]
    assert "training only" in index.warnings[0]


def test_explicit_and_discovered_labels_file(make_dataset, tmp_path: Path) -> None:
    root = make_dataset({"n0": 3})
    (root / "my_labels.txt").write_text(LABELS)  # any *labels*.txt in root is found
    assert scan_dataset(root, workers=1).species[0].common_name == "mantled_howler"
    other = tmp_path / "elsewhere.txt"
    other.write_text("Label, Common Name\nn0, howler\n")
    assert scan_dataset(root, labels_file=other, workers=1).species[0].common_name == "howler"


def test_labels_and_folders_that_do_not_match_warn(make_dataset) -> None:
    text = "Label, Common Name\nn0, zero\nn1, one\nn9, nine\n"
    index = scan_dataset(make_dataset({"n0": 3, "n1": 3, "n2": 3}, labels_text=text), workers=1)
    assert [s.common_name for s in index.species] == ["zero", "one", "n2"]
    assert index.counts()["train"]["n2"] == 1  # still trained, under its folder name
    joined = "\n".join(index.warnings)
    assert "class folder(s) n2 missing from monkey_labels.txt" in joined
    assert "lists n9 but there is no such class folder" in joined


def test_hidden_files_and_loose_files(make_dataset) -> None:
    root = make_dataset({"a": 3})
    (root / "a" / ".DS_Store").write_bytes(b"junk")
    (root / "a" / "._a_000.jpg").write_bytes(b"junk")
    (root / "stray.jpg").write_bytes(b"junk")
    (root / "README.md").write_text("notes")
    index = scan_dataset(root, workers=1)
    assert index.skipped == []
    assert sum(index.counts()["train"].values()) + len(index.val) + len(index.test) == 3
    assert index.warnings == [
        f"1 file(s) directly in {root} are ignored (e.g. stray.jpg); put photos inside a folder named after "
        "their species"
    ]


# --- unreadable files and bad layouts ---


def test_unreadable_files_are_skipped_once_with_reasons(make_dataset) -> None:
    root = make_dataset({"a": 5, "b": 5})
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "b" / "notes.jpg").write_text("not a photo")
    index = scan_dataset(root, workers=2)
    assert [(s.path.relative_to(root).as_posix(), s.reason) for s in index.skipped] == [
        ("a/empty.jpg", "file is empty (0 bytes)"),
        ("b/notes.jpg", "not an image, or a format Pillow does not recognise"),
    ]
    used = _rel(index, index.train + index.val + index.test)
    assert "a/empty.jpg" not in used and "b/notes.jpg" not in used and len(used) == 10
    assert [w for w in index.warnings if "unreadable" in w] == [
        "2 unreadable file(s) skipped; see the skipped list for each reason"
    ]


def test_unverified_scan_trusts_every_file(make_dataset) -> None:
    root = make_dataset({"a": 5})
    (root / "a" / "empty.jpg").write_bytes(b"")
    index = scan_dataset(root, workers=1, verify=False)
    assert index.skipped == [] and len(index.train + index.val + index.test) == 6


def test_empty_class_folder_is_an_error(make_dataset) -> None:
    root = make_dataset({"a": 3, "b": 0})
    with pytest.raises(DataError) as info:
        scan_dataset(root, workers=1)
    assert info.value.path == str(root / "b")
    assert "no usable photos" in info.value.problem and "add photos" in info.value.fix


def test_class_of_only_bad_files_is_an_error(make_dataset) -> None:
    root = make_dataset({"a": 3, "b": 0})
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(DataError, match=r"b: class folder has no usable photos \(1 unreadable file"):
        scan_dataset(root, workers=1)


def test_missing_root_file_root_and_no_classes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data folder not found"):
        scan_dataset(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        scan_dataset(tmp_path / "file")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "photo.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="no class folders found") as info:
        scan_dataset(tmp_path / "flat")
    assert "<species>" in info.value.fix


def test_validation_classes_must_match_training(make_dataset) -> None:
    root = make_dataset({"n0": 3, "n1": 3}, prefix="training")
    make_dataset({"n0": 1, "n7": 1}, root=root, prefix="validation")
    with pytest.raises(DataError, match=r"only in training/: n1; only in validation/: n7"):
        scan_dataset(root, workers=1)


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (0.1, 1.0), (0.5, 0.5)])
def test_bad_fractions(make_dataset, val: float, test: float) -> None:
    with pytest.raises(ConfigError):
        scan_dataset(make_dataset({"a": 3}), val_fraction=val, test_fraction=test)


# --- determinism ---


def test_same_seed_same_split_other_seed_other_split(make_dataset) -> None:
    root = make_dataset({"a": 20, "b": 20})
    first, again = scan_dataset(root, seed=1, workers=2), scan_dataset(root, seed=1, workers=2)
    other = scan_dataset(root, seed=2, workers=2)
    assert _splits(first) == _splits(again)
    assert _splits(first)["test"] != _splits(other)["test"]
    assert first.counts() == other.counts()  # stratification does not depend on the seed


def test_split_ignores_filesystem_order(make_dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_dataset({"a": 20, "b": 20})
    expected = _splits(scan_dataset(root, verify=False))
    real = layout.iter_photos
    monkeypatch.setattr(layout, "iter_photos", lambda folder: iter(sorted(real(folder), reverse=True)))
    assert _splits(scan_dataset(root, verify=False)) == expected


def test_adding_a_class_leaves_other_splits_alone(make_dataset) -> None:
    root = make_dataset({"a": 20, "c": 20})
    before = _splits(scan_dataset(root, verify=False))
    make_dataset({"b": 20}, root=root)
    after = _splits(scan_dataset(root, verify=False))
    for name in layout.SPLITS:
        assert [p for p in after[name] if not p.startswith("b/")] == before[name]


# --- fingerprint and JSON record ---


def test_fingerprint_stable_across_places_and_changes_with_a_file(make_dataset, tmp_path: Path) -> None:
    root = make_dataset({"a": 6, "b": 6})
    fp = scan_dataset(root, workers=1).fingerprint()
    assert len(fp) == 64 and fp == scan_dataset(root, workers=1).fingerprint()
    moved = shutil.copytree(root, tmp_path / "moved")
    assert scan_dataset(moved, workers=1).fingerprint() == fp
    index = scan_dataset(moved, workers=1)
    photo = index.train[0].path
    photo.write_bytes(photo.read_bytes() + b"\x00" * 10)  # same name, different size
    assert index.fingerprint() != fp
    assert scan_dataset(moved, workers=1).fingerprint() != fp


def test_json_round_trip_under_a_new_root(make_dataset, tmp_path: Path) -> None:
    root = make_dataset({"a": 6, "b": 4})
    (root / "b" / "bad.jpg").write_text("nope")
    index = scan_dataset(root, workers=1)
    record = json.loads(json.dumps(index.to_json()))
    # pinned: seed 0 carves these exact splits, so a recorded run can be reproduced
    assert record["splits"] == {
        "train": {
            "a": ["a/a_000.jpg", "a/a_001.jpg", "a/a_002.jpg", "a/a_003.jpg"],
            "b": ["b/b_000.jpg", "b/b_001.jpg"],
        },
        "val": {"a": ["a/a_004.jpg"], "b": ["b/b_003.jpg"]},
        "test": {"a": ["a/a_005.jpg"], "b": ["b/b_002.jpg"]},
    }
    assert record["skipped"] == [{"path": "b/bad.jpg", "reason": index.skipped[0].reason}]
    moved = shutil.copytree(root, tmp_path / "elsewhere")
    back = DataIndex.from_json(record, moved)
    assert back.root == moved and back.species == index.species and back.val_source == "carved"
    assert _splits(back) == _splits(index)
    assert [s.target for s in back.train] == [s.target for s in index.train]
    assert [(s.path, s.reason) for s in back.skipped] == [(moved / "b" / "bad.jpg", index.skipped[0].reason)]
    assert back.fingerprint() == index.fingerprint()


def test_from_json_rejects_a_damaged_record(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data index record is malformed"):
        DataIndex.from_json({"version": 1, "species": []}, tmp_path)


def test_copies_of_a_photo_stay_in_one_split(make_dataset) -> None:
    root = make_dataset({"a": 20, "b": 20})
    for i in range(0, 20, 2):  # every second photo of "a" saved again under another name
        (root / "a" / f"copy_{i:03d}.jpg").write_bytes((root / "a" / f"a_{i:03d}.jpg").read_bytes())
    index = scan_dataset(root, workers=1)
    where = {}
    for name in ("train", "val", "test"):
        for s in index.split(name):
            where.setdefault((s.path.parent.name, s.path.read_bytes()), set()).add(name)
    assert len(where) == 40 and all(len(v) == 1 for v in where.values())
    counts = index.counts()
    assert sum(counts[n]["a"] for n in counts) == 30
    assert counts["test"]["a"] in (5, 6) and counts["val"]["a"] in (3, 4)  # 4.5 and 3 of 30, a pair over
    assert index.warnings == ["10 training photo(s) are byte-identical copies of another photo of their "
                              "species; each photo and its copies are kept in one split"]


def test_without_copies_the_split_is_a_plain_seeded_shuffle(make_dataset) -> None:
    import random

    root = make_dataset({"a": 20})
    index = scan_dataset(root, workers=1, seed=3)
    order = sorted((root / "a").iterdir(), key=str)
    random.Random("3:a").shuffle(order)
    assert sorted(s.path for s in index.test) == sorted(order[:3])  # round(20 * 0.15)
    assert sorted(s.path for s in index.val) == sorted(order[3:5])  # round(20 * 0.1)


def test_copies_are_found_from_the_verify_pass_hashes_not_a_second_read(make_dataset, monkeypatch) -> None:
    from monkeysee.data import copies

    root = make_dataset({"a": 8, "b": 8})

    def unexpected(path: Path) -> str:
        raise AssertionError(f"{path} hashed a second time")

    monkeypatch.setattr(copies, "digest", unexpected)  # copy_groups' own fallback
    index = scan_dataset(root, workers=2)
    assert sum(index.counts()["test"].values()) == 2  # round(8 * 0.15) per species, carved as before


def test_nothing_carved_reads_no_photo_for_copies(make_dataset, monkeypatch) -> None:
    from monkeysee.data import layout

    def unexpected(*args: object) -> None:
        raise AssertionError("copy_groups called with nothing to carve")

    monkeypatch.setattr(layout, "copy_groups", unexpected)
    index = scan_dataset(make_dataset({"a": 4}), val_fraction=0.0, test_fraction=0.0, verify=False)
    assert len(index.train) == 4 and index.warnings == []
