"""The augmentation preview grid and the `monkeysee augment-preview` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monkeysee.cli import main
from monkeysee.data.augment import AugmentConfig
from monkeysee.data.images import load_rgb
from monkeysee.data.layout import Sample, scan_dataset
from monkeysee.data.preview import augmentation_grid
from monkeysee.data.transforms import denormalize, eval_transform
from monkeysee.errors import DataError
from monkeysee.models import get_backbone
from monkeysee.models.registry import Preprocess

PRE = Preprocess(input_size=32)


@pytest.fixture
def samples(tmp_path: Path, photo) -> list[Sample]:
    return [
        Sample(photo(tmp_path / f"c{t}_{i}.jpg", size=(40, 36), color=30 * i + t), t)
        for t in range(3)
        for i in range(3)
    ]


def test_grid_size_and_determinism(samples: list[Sample]) -> None:
    state = torch.get_rng_state()
    grid = augmentation_grid(samples, PRE, AugmentConfig(), n_photos=2, n_augmented=3, seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left alone
    # 4 tiles of 32 px + 4 px gaps across; 2 rows of 32 px + 20 px caption + 4 px gap down
    assert grid.size == (4 * 36 + 4, 2 * 56 + 4) and grid.mode == "RGB"
    again = augmentation_grid(samples, PRE, AugmentConfig(), n_photos=2, n_augmented=3, seed=1)
    assert grid.tobytes() == again.tobytes()
    other = augmentation_grid(samples, PRE, AugmentConfig(), n_photos=2, n_augmented=3, seed=2)
    assert grid.tobytes() != other.tobytes()


def _eval_view(path: Path) -> np.ndarray:
    """The photo as the model sees it at eval time, as RGB uint8."""
    x = denormalize(eval_transform(PRE)(load_rgb(path)), PRE)
    return (x.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def test_each_row_starts_with_the_eval_view_of_a_photo_of_another_species(samples: list[Sample]) -> None:
    grid = np.asarray(augmentation_grid(samples, PRE, AugmentConfig(), n_photos=3, n_augmented=2, seed=0))
    views = {s.path: _eval_view(s.path) for s in samples}
    tile = 32
    rows = []
    for row in range(3):
        top = 4 + row * (tile + 20 + 4)
        first = grid[top : top + tile, 4 : 4 + tile]
        (match,) = [s for s in samples if np.array_equal(views[s.path], first)]
        rows.append(match.target)
        caption = grid[top + tile + 2 : top + tile + 20, 4 : 4 + tile]
        assert (caption < 128).any()  # a caption is written under the tile
    assert sorted(rows) == [0, 1, 2]  # one photo of each species before any repeats


def test_grid_passes_over_unreadable_photos(samples: list[Sample]) -> None:
    for s in samples[1:]:
        s.path.write_bytes(b"")
    grid = augmentation_grid(samples, PRE, n_photos=4, n_augmented=1)
    assert grid.size == (2 * 36 + 4, 1 * 56 + 4)  # only one readable photo: one row
    for s in samples:
        s.path.unlink()
    with pytest.raises(DataError, match="no readable photos"):
        augmentation_grid(samples, PRE)


def test_cli_writes_a_png(make_dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_dataset({"n0": 2, "n1": 2}, prefix="training")
    out = tmp_path / "previews" / "grid.png"
    argv = [
        "augment-preview",
        "--data",
        str(root),
        "--out",
        str(out),
        "--photos",
        "2",
        "--per-photo",
        "2",
        "--ops",
        "hflip,grayscale",
        "--backbone",
        "efficientnet_lite0",
    ]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out)
    index = scan_dataset(root, val_fraction=0.0, test_fraction=0.0, verify=False)
    expected = augmentation_grid(index.train, get_backbone("efficientnet_lite0").preprocess,
                                 AugmentConfig(ops=("hflip", "grayscale")), 2, 2, 0, species=index.species)
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.size == (3 * 228 + 4, 2 * 248 + 4)  # efficientnet_lite0 feeds 224 px
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(expected))  # the options reached it


def test_cli_reports_bad_ops_and_data(
    make_dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_dataset({"n0": 1})
    assert main(["augment-preview", "--data", str(root), "--ops", "hflip,sparkle"]) == 2
    assert "unknown augmentation(s) 'sparkle'" in capsys.readouterr().err
    assert main(["augment-preview", "--data", str(tmp_path / "missing")]) == 2
    assert "data folder not found" in capsys.readouterr().err
