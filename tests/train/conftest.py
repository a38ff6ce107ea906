"""A tiny frozen 'body' and tiny generated photos, so store tests run in well under a second each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
from PIL import Image
from torch import nn

from monkeysee.data.layout import Sample
from monkeysee.train.store import FeatureStore, StoreKey

SIZE = 16


class Tally:
    """Counts shared by a module and its copies: encoding runs a folded copy (models.fold) of it."""

    def __init__(self) -> None:
        self.images = self.calls = 0

    def __deepcopy__(self, memo: dict[int, object]) -> Tally:
        return self


class Counting(nn.Module):
    """Wraps a module and counts the images it, or a copy of it, is run on (the cost the store exists
    to avoid)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.tally = Tally()

    @property
    def images(self) -> int:
        return self.tally.images

    @property
    def calls(self) -> int:
        return self.tally.calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.tally.images += len(x)
        self.tally.calls += 1
        return self.inner(x)


def tiny_body(seed: int = 0) -> nn.Sequential:
    """Three 'stages' of a CNN; the store holds the output of the first `cut`."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()),
    ).eval()


def write_photo(path: Path, seed: int, size: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG")
    return path


def clean_transform() -> T.Compose:
    return T.Compose([T.Resize(SIZE), T.CenterCrop(SIZE), T.ToImage(), T.ToDtype(torch.float32, scale=True)])


def aug_transform(flip: float = 0.5) -> T.Compose:
    return T.Compose([T.RandomResizedCrop(SIZE, scale=(0.5, 1.0)), T.RandomHorizontalFlip(flip),
                      T.ToImage(), T.ToDtype(torch.float32, scale=True)])


def make_key(lower: nn.Module, backbone: str = "tiny", cut: int = 2, flip: float = 0.5, seed: int = 0,
             precision: str = "fp32") -> StoreKey:
    aug = aug_transform(flip)
    return StoreKey.for_encoding(backbone, cut, lower, clean_transform(), aug, precision, seed)


@pytest.fixture
def photos(tmp_path: Path) -> Callable[[int, int], list[Sample]]:
    """`photos(n, start)`: n photos named by number, targets cycling over 3 classes."""

    def make(n: int, start: int = 0) -> list[Sample]:
        return [Sample(write_photo(tmp_path / "photos" / f"{i:03d}.png", seed=i), i % 3)
                for i in range(start, start + n)]

    return make


@pytest.fixture
def lower() -> Counting:
    return Counting(tiny_body()[:2])


@pytest.fixture
def store(tmp_path: Path, lower: Counting) -> FeatureStore:
    return FeatureStore(tmp_path / "store", make_key(lower))
