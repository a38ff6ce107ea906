"""Photos as a torch Dataset, and seeded DataLoaders that survive a photo going bad mid-run."""

from __future__ import annotations

import random
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from monkeysee.data.images import load_rgb
from monkeysee.data.layout import Sample
from monkeysee.data.preprocess import Preprocess
from monkeysee.errors import ImageError, MonkeyseeError

Item = tuple[torch.Tensor | None, int, int]


class PhotoDataset(Dataset):
    """`samples` read with `load_rgb` and passed through `transform`; items are (tensor, target, index).

    A photo that cannot be read any more (changed or removed since the scan) yields the sentinel
    `(None, target, index)` and one warning per path; `collate_skip_bad` then drops it from its batch.
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.samples = list(samples)
        self.transform = transform
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Item:
        sample = self.samples[index]
        try:
            image = load_rgb(sample.path)
        except ImageError as exc:
            if str(sample.path) not in self._warned:
                self._warned.add(str(sample.path))
                warnings.warn(f"skipping unreadable photo: {exc.message}", RuntimeWarning, stacklevel=2)
            return None, sample.target, index
        return self.transform(image), sample.target, index


def collate_skip_bad(batch: list[Item]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Batch the good items as (images, targets, indices); None when every item in the batch was bad.

    Training and evaluation loops must skip a None batch.
    """
    good = [item for item in batch if item[0] is not None]
    if not good:
        return None
    images, targets, indices = default_collate(good)
    return images, targets, indices


def seed_worker(worker_id: int) -> None:
    """Give python and numpy in each DataLoader worker the seed torch already derived for it."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    workers: int,
    *,
    drop_last: bool = False,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A DataLoader whose order and per-worker randomness follow `seed` and nothing else."""
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(persistent_workers=True, worker_init_fn=seed_worker)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate_skip_bad,
        generator=torch.Generator().manual_seed(seed),
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        **kwargs,
    )


def _decode_or_reason(path: str | Path, preprocess: Preprocess | None) -> Image.Image | str:
    try:
        return load_rgb(path, preprocess=preprocess)
    except MonkeyseeError as exc:
        return exc.message


def decoded_batches(
    paths: Iterable[str | Path], batch_size: int, workers: int, preprocess: Preprocess | None = None
) -> Iterator[list[tuple[str, Image.Image | str]]]:
    """Decode photos in a thread pool (PIL releases the GIL), at most three batches ahead, in order.

    Each item is the decoded photo or, for a file that is not a usable photo, the reason as text. With
    the model's `preprocess`, photos are decoded no larger than it needs (see `load_rgb`), so the
    batches ahead hold small images whatever the camera.
    """
    todo = iter(paths)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque[tuple[str, Future]] = deque(
            (str(p), pool.submit(_decode_or_reason, p, preprocess)) for p in islice(todo, batch_size * 3)
        )
        batch: list[tuple[str, Image.Image | str]] = []
        while pending:
            src, fut = pending.popleft()
            for p in islice(todo, 1):
                pending.append((str(p), pool.submit(_decode_or_reason, p, preprocess)))
            batch.append((src, fut.result()))
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
