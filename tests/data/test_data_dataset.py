"""PhotoDataset and seeded loaders: items, photos that go bad mid-run, reproducible order."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from monkeysee.data.augment import AugmentConfig, train_transform
from monkeysee.data.dataset import PhotoDataset, collate_skip_bad, make_loader
from monkeysee.data.layout import Sample
from monkeysee.data.transforms import eval_transform
from monkeysee.models.registry import Preprocess

PRE = Preprocess(input_size=16)


@pytest.fixture
def samples(tmp_path: Path, photo) -> list[Sample]:
    return [
        Sample(photo(tmp_path / f"p{i}.jpg", size=(20, 18), color=40 * i), target=i % 3) for i in range(6)
    ]


def test_items_are_tensor_target_index(samples: list[Sample]) -> None:
    ds = PhotoDataset(samples, eval_transform(PRE))
    assert len(ds) == 6
    x, target, index = ds[4]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert (target, index) == (1, 4)


def test_a_photo_gone_bad_is_dropped_with_one_warning(samples: list[Sample]) -> None:
    ds = PhotoDataset(samples, eval_transform(PRE))
    samples[2].path.write_bytes(b"")  # changed since the scan
    with pytest.warns(RuntimeWarning, match=r"p2\.jpg: file is empty"):
        bad = ds[2]
    assert bad == (None, 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ds[2][0] is None  # second time: no second warning
    images, targets, indices = collate_skip_bad([ds[1], bad, ds[3]])
    assert images.shape == (2, 3, 16, 16)
    assert targets.tolist() == [1, 0] and indices.tolist() == [1, 3]
    assert collate_skip_bad([bad]) is None


def test_loader_order_follows_the_seed(samples: list[Sample]) -> None:
    ds = PhotoDataset(samples, eval_transform(PRE))

    def order(seed: int) -> list[int]:
        return [
            i for _, _, idx in make_loader(ds, 2, shuffle=True, seed=seed, workers=0) for i in idx.tolist()
        ]

    assert order(3) == order(3)
    assert sorted(order(3)) == list(range(6))
    assert order(3) != order(4)
    unshuffled = [idx.tolist() for _, _, idx in make_loader(ds, 4, shuffle=False, seed=0, workers=0)]
    assert unshuffled == [[0, 1, 2, 3], [4, 5]]


def test_loader_options_by_worker_count(samples: list[Sample]) -> None:
    ds = PhotoDataset(samples, eval_transform(PRE))
    assert make_loader(ds, 2, shuffle=False, seed=0, workers=0).persistent_workers is False
    loader = make_loader(ds, 2, shuffle=False, seed=0, workers=1)
    assert loader.persistent_workers is True and loader.worker_init_fn is not None


def test_augmentation_in_a_worker_is_reproducible(samples: list[Sample]) -> None:
    ds = PhotoDataset(samples[:4], train_transform(PRE, AugmentConfig()))

    def batches(seed: int) -> torch.Tensor:
        return torch.cat([x for x, _, _ in make_loader(ds, 4, shuffle=True, seed=seed, workers=1)])

    torch.testing.assert_close(batches(7), batches(7), atol=0, rtol=0)
    assert not torch.equal(batches(7), batches(8))
