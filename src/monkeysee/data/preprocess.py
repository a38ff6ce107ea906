"""How a photo becomes a tensor for a backbone: the numbers only (size, crop, interpolation, normalisation).

It lives in data/ because every transform needs it; the backbone registry (models/) says which values
each backbone uses, and checkpoints record them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Preprocess:
    """How a photo becomes a tensor for this backbone (eval transform; training adds augmentation)."""

    input_size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def resize_size(self) -> int:
        return round(self.input_size / self.crop_pct)

    def resized(self, size: tuple[int, int]) -> tuple[int, int]:
        """(w, h) of a photo of `size` after the eval transform's resize: torchvision's Resize(int) sets
        the short side to `resize_size` and scales the long side, rounding down."""
        width, height = size
        short, long = self.resize_size, int(self.resize_size * max(width, height) / min(width, height))
        return (short, long) if width <= height else (long, short)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(
            input_size=int(d["input_size"]),
            crop_pct=float(d["crop_pct"]),
            interpolation=str(d["interpolation"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
        )
