"""Self-describing checkpoints: weights in safetensors plus a JSON manifest with everything needed to
rebuild the model and its preprocessing, so nothing downstream re-declares labels or transforms.

This module says what a manifest holds; `monkeysee.rundir` is the one that reads and writes the files."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from monkeysee import __version__
from monkeysee.data.preprocess import Preprocess
from monkeysee.data.species import Species
from monkeysee.io import atomic_write_bytes

FORMAT_VERSION = 2  # 2: `files` pins every checkpoint file by size and sha256


@dataclass(frozen=True)
class Manifest:
    """What a trained model is: its species, backbone, preprocessing, and how it came to be."""

    backbone: str
    species: tuple[Species, ...]
    preprocess: Preprocess
    explain_layer: str
    dropout: float = 0.2
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    unknown: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"bytes", "sha256"}
    calibration: dict[str, Any] = field(default_factory=dict)  # how logits become honest probabilities

    @property
    def num_classes(self) -> int:
        return len(self.species)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "monkeysee-checkpoint",
            "format_version": FORMAT_VERSION,
            "backbone": self.backbone,
            "num_classes": self.num_classes,
            "species": [s.to_dict() for s in self.species],
            "preprocess": self.preprocess.to_dict(),
            "explain_layer": self.explain_layer,
            "dropout": self.dropout,
            "seed": self.seed,
            "config": self.config,
            "metrics": self.metrics,
            "data_fingerprint": self.data_fingerprint,
            "unknown": self.unknown,
            "versions": self.versions or library_versions(),
            "created": self.created or datetime.now(UTC).isoformat(timespec="seconds"),
            "files": self.files,
            "calibration": self.calibration,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        return cls(
            backbone=d["backbone"],
            species=tuple(Species.from_dict(s) for s in d["species"]),
            preprocess=Preprocess.from_dict(d["preprocess"]),
            explain_layer=d["explain_layer"],
            dropout=float(d.get("dropout", 0.2)),
            seed=int(d.get("seed", 0)),
            config=d.get("config", {}),
            metrics=d.get("metrics", {}),
            data_fingerprint=d.get("data_fingerprint", ""),
            unknown=d.get("unknown", {}),
            versions=d.get("versions", {}),
            created=d.get("created", ""),
            files=dict(d.get("files", {})),
            calibration=dict(d.get("calibration", {})),
        )

    def replace(self, **changes: Any) -> Manifest:
        from dataclasses import replace

        return replace(self, **changes)


def library_versions() -> dict[str, str]:
    import numpy
    import PIL
    import timm
    import torchvision

    return {
        "monkeysee": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
    }


def tensor_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file's bytes (contiguous CPU copies of `tensors`)."""
    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                        ) -> None:
    """safetensors file written atomically (temporary name, fsync, rename)."""
    atomic_write_bytes(path, tensor_bytes(tensors, metadata))
