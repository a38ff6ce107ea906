"""Explanations as data: one frozen record per method and batch, with `.save()` for files on disk."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from monkeysee.explain import render


@dataclass(frozen=True, eq=False)
class CamResult:
    """The maps one CAM method made for a batch of photos, and what they explain.

    `maps` (B, h, w) are at the layer's resolution and `upsampled` (B, H, W) at the model input's, both
    min-max scaled to [0, 1] (with an epsilon; an all-zero map stays zero). `raw` is the layer-resolution
    map after ReLU and before scaling, whose magnitude some methods give meaning (HiResCAM sums to the
    logit's share). `images`, when known, are the model inputs as RGB uint8 (B, H, W, 3) for overlays.
    `seconds` is the wall time of the method including the passes it needed; `precision` the model
    passes' arithmetic ("fp32" or "bf16"; the maps themselves are always formed in float32).
    """

    method: str
    layer: str
    maps: np.ndarray
    upsampled: np.ndarray
    raw: np.ndarray
    target_indices: tuple[int, ...]
    target_names: tuple[str, ...]
    target_logits: tuple[float, ...]
    target_probabilities: tuple[float, ...]
    predicted_indices: tuple[int, ...]
    names: tuple[str, ...]
    images: np.ndarray | None = None
    seconds: float = 0.0
    precision: str = "fp32"

    def __len__(self) -> int:
        return len(self.maps)

    def photo(self, i: int) -> CamResult:
        """The result for photo `i` alone (a batch of one)."""
        sl = slice(i, i + 1)
        return replace(
            self,
            maps=self.maps[sl],
            upsampled=self.upsampled[sl],
            raw=self.raw[sl],
            target_indices=self.target_indices[sl],
            target_names=self.target_names[sl],
            target_logits=self.target_logits[sl],
            target_probabilities=self.target_probabilities[sl],
            predicted_indices=self.predicted_indices[sl],
            names=self.names[sl],
            images=None if self.images is None else self.images[sl],
            seconds=self.seconds / max(len(self), 1),
        )

    @classmethod
    def concat(cls, results: Sequence[CamResult]) -> CamResult:
        """Join the results of several batches of the same method and layer."""
        if not results:
            raise ValueError("nothing to concatenate")
        first = results[0]
        if any(
            (r.method, r.layer, r.precision) != (first.method, first.layer, first.precision) for r in results
        ):
            raise ValueError("can only concatenate results of one method, layer and precision")
        with_images = all(r.images is not None for r in results)
        return cls(
            method=first.method,
            layer=first.layer,
            maps=np.concatenate([r.maps for r in results]),
            upsampled=np.concatenate([r.upsampled for r in results]),
            raw=np.concatenate([r.raw for r in results]),
            target_indices=sum((r.target_indices for r in results), ()),
            target_names=sum((r.target_names for r in results), ()),
            target_logits=sum((r.target_logits for r in results), ()),
            target_probabilities=sum((r.target_probabilities for r in results), ()),
            predicted_indices=sum((r.predicted_indices for r in results), ()),
            names=sum((r.names for r in results), ()),
            images=np.concatenate([r.images for r in results]) if with_images else None,
            seconds=sum(r.seconds for r in results),
            precision=first.precision,
        )

    def overlays(self, alpha: float = 0.5, cmap: str = render.DEFAULT_CMAP) -> list[np.ndarray]:
        """One RGB uint8 picture per photo: the map over the photo, or the coloured map alone."""
        if self.images is None:
            return [render.heatmap(m, cmap) for m in self.upsampled]
        return [
            render.overlay(img, m, alpha, cmap) for img, m in zip(self.images, self.upsampled, strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (everything but the arrays)."""
        return {
            "method": self.method,
            "layer": self.layer,
            "layer_shape": list(self.maps.shape[1:]),
            "input_shape": list(self.upsampled.shape[1:]),
            "precision": self.precision,
            "seconds": self.seconds,
            "photos": [
                {
                    "name": self.names[i],
                    "target_index": self.target_indices[i],
                    "target": self.target_names[i],
                    "target_logit": self.target_logits[i],
                    "target_probability": self.target_probabilities[i],
                    "predicted_index": self.predicted_indices[i],
                }
                for i in range(len(self))
            ],
        }

    def save(self, directory: str | Path, alpha: float = 0.5, cmap: str = render.DEFAULT_CMAP) -> list[Path]:
        """Write per photo `<name>__<method>.png` (overlay), `.npy` (input-resolution map) and
        `_layer.npy` (layer-resolution map), plus `<method>.json` describing them all."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        manifest = self.to_dict() | {"alpha": alpha, "colormap": cmap}
        tag = file_safe(self.method)
        for i, picture in enumerate(self.overlays(alpha, cmap)):
            stem = f"{file_safe(self.names[i])}__{tag}"
            files = {
                "overlay": directory / f"{stem}.png",
                "map": directory / f"{stem}.npy",
                "layer_map": directory / f"{stem}_layer.npy",
            }
            render.save_png(picture, files["overlay"])
            np.save(files["map"], self.upsampled[i].astype(np.float32))
            np.save(files["layer_map"], self.maps[i].astype(np.float32))
            manifest["photos"][i]["files"] = {k: p.name for k, p in files.items()}
            written += files.values()
        path = directory / f"{tag}.json"
        path.write_text(json.dumps(manifest, indent=2) + "\n")
        return [*written, path]


def file_safe(name: str) -> str:
    """A name usable in file names on every OS ('gradcam++' -> 'gradcampp')."""
    name = name.replace("+", "p")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "photo"
