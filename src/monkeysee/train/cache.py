"""Frozen layers run once: the activations where the trainable stages begin are computed a single time,
for a clean view and `views` augmented views of every training photo, and for the clean val/test photos.

Both training phases then run only the top of the network, which is what makes CPU training take
minutes: the frozen bottom is most of the compute, and it would otherwise be repeated every epoch.
The trade-off is that augmentation is drawn from a fixed pool of views per photo instead of anew each
epoch (each epoch still picks one view per photo at random).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from monkeysee.checkpoint import atomic_save_tensors
from monkeysee.data.dataset import PhotoDataset, make_loader
from monkeysee.data.layout import Sample
from monkeysee.runtime import autocast

Transform = Callable[[Image.Image], torch.Tensor]


class _Views:
    """Transform returning a clean view then `n` augmented views of one photo, stacked."""

    def __init__(self, clean: Transform, augmented: Transform, n: int) -> None:
        self.clean, self.augmented, self.n = clean, augmented, n

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.stack([self.clean(image), *(self.augmented(image) for _ in range(self.n))])


@dataclass
class SplitCache:
    """Boundary activations of one split: (views, N, C, h, w), the targets and which samples they are."""

    acts: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor  # positions in the split's sample list (bad photos are missing)

    def __len__(self) -> int:
        return int(self.targets.numel())


@torch.inference_mode()
def encode(
    lower: nn.Module,
    samples: Sequence[Sample],
    clean: Transform,
    augmented: Transform | None,
    views: int,
    *,
    batch_size: int,
    workers: int,
    seed: int,
    precision: str,
    device: torch.device,
    desc: str,
) -> SplitCache:
    """Run `lower` (eval mode) over every photo: view 0 is clean, views 1..n augmented."""
    n_aug = views if augmented is not None else 0
    transform = _Views(clean, augmented, n_aug) if augmented is not None else _Views(clean, clean, 0)
    photos_per_batch = max(1, batch_size // (n_aug + 1))
    loader = make_loader(PhotoDataset(samples, transform), photos_per_batch, False, seed, workers)
    chunks, targets, indices = [], [], []
    with tqdm(total=len(samples), desc=desc, unit="photo", disable=None, leave=False) as bar:
        for batch in loader:
            if batch is None:
                continue
            x, y, idx = batch
            b, v = x.shape[:2]
            flat = x.flatten(0, 1).to(device).contiguous(memory_format=torch.channels_last)
            with autocast(precision, device):
                out = lower(flat)
            out = out.to(torch.bfloat16 if precision == "bf16" else torch.float32).cpu()
            chunks.append(out.unflatten(0, (b, v)).transpose(0, 1).contiguous())
            targets.append(y)
            indices.append(idx)
            bar.update(b)
    missing = len(samples) - sum(len(t) for t in targets)
    if missing:
        warnings.warn(f"{desc}: {missing} photo(s) could not be read and were left out", stacklevel=2)
    return SplitCache(torch.cat(chunks, dim=1), torch.cat(targets), torch.cat(indices))


def save_caches(path: Path, caches: dict[str, SplitCache], meta: dict[str, str]) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for name, c in caches.items():
        tensors |= {f"{name}.acts": c.acts, f"{name}.targets": c.targets, f"{name}.indices": c.indices}
    atomic_save_tensors(path, tensors, meta)


def load_caches(path: Path) -> dict[str, SplitCache]:
    t = load_file(str(path))
    names = {k.split(".")[0] for k in t}
    return {n: SplitCache(t[f"{n}.acts"], t[f"{n}.targets"], t[f"{n}.indices"]) for n in names}
