"""Eval-time preprocessing derived from the backbone's own config (training adds augmentation)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision.transforms.v2 as T
from PIL import Image

from monkeysee.data.preprocess import Preprocess

INTERPOLATION = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


def to_normalized_tensor(pre: Preprocess) -> T.Compose:
    """PIL RGB image -> float tensor normalised as the backbone expects."""
    return T.Compose(
        [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(list(pre.mean), list(pre.std))]
    )


def eval_transform(pre: Preprocess) -> Callable[[Image.Image], torch.Tensor]:
    """Resize the short side to input/crop_pct, centre-crop to the input size, normalise."""
    return T.Compose(
        [
            T.Resize(pre.resize_size, interpolation=INTERPOLATION[pre.interpolation], antialias=True),
            T.CenterCrop(pre.input_size),
            to_normalized_tensor(pre),
        ]
    )


def denormalize(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """Inverse of the normalisation, clamped to [0, 1], for showing model inputs as pictures."""
    mean = torch.tensor(pre.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.tensor(pre.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x * std + mean).clamp(0, 1)
