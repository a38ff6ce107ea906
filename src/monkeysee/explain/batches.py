"""Photos from disk as model-ready batches, decoded ahead in threads; unreadable ones listed, not lost."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from monkeysee.data.dataset import decoded_batches
from monkeysee.data.preprocess import Preprocess
from monkeysee.data.transforms import eval_transform


@dataclass
class PhotoBatches:
    """Iterate to get (indices into `paths`, batch tensor) of the readable photos, in order; afterwards
    `unreadable` lists the others with the reason."""

    paths: Sequence[str | Path]
    preprocess: Preprocess
    batch_size: int = 32
    workers: int = 2
    device: torch.device | str = "cpu"
    unreadable: list[dict[str, str]] = field(default_factory=list)

    def __iter__(self) -> Iterator[tuple[list[int], torch.Tensor]]:
        transform = eval_transform(self.preprocess)
        start = 0
        for batch in decoded_batches(self.paths, self.batch_size, self.workers, preprocess=self.preprocess):
            good = [(start + i, im) for i, (_, im) in enumerate(batch) if not isinstance(im, str)]
            self.unreadable += [{"path": src, "error": im} for src, im in batch if isinstance(im, str)]
            start += len(batch)
            if good:
                yield [i for i, _ in good], torch.stack([transform(im) for _, im in good]).to(self.device)
