"""Self-describing checkpoints: weights in safetensors plus a JSON manifest with everything needed to
rebuild the model and its preprocessing, so nothing downstream re-declares labels or transforms."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from monkeysee import __version__
from monkeysee.data.species import Species
from monkeysee.errors import CheckpointError
from monkeysee.io import atomic_write_json
from monkeysee.models import Classifier, Preprocess, create_model

MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
FORMAT_VERSION = 1


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


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    """safetensors file written atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(directory: str | Path, model: Classifier, manifest: Manifest) -> Path:
    """Write `model.safetensors` then `manifest.json` into `directory`, each atomically."""
    directory = Path(directory)
    atomic_save_tensors(directory / WEIGHTS, model.state_dict(), {"backbone": manifest.backbone})
    atomic_write_json(directory / MANIFEST, manifest.to_dict())
    return directory


def read_manifest(directory: str | Path) -> Manifest:
    path = Path(directory) / MANIFEST
    if not Path(directory).is_dir():
        raise CheckpointError("run folder not found", fix="pass the folder that `monkeysee train` wrote",
                              path=directory)
    if not path.is_file():
        raise CheckpointError(
            f"no {MANIFEST} here, so this is not a finished monkeysee run",
            fix="pass a run folder written by `monkeysee train` (or resume it with --resume)",
            path=directory,
        )
    try:
        return Manifest.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"manifest is damaged ({exc})", fix="re-run training", path=path) from exc


@dataclass
class LoadedRun:
    """A model rebuilt from its run folder, in eval mode, with its manifest."""

    directory: Path
    model: Classifier
    manifest: Manifest

    @property
    def species(self) -> tuple[Species, ...]:
        return self.manifest.species


def load_run(directory: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild a trained classifier from `manifest.json` + `model.safetensors` (no pickle involved)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{WEIGHTS} is missing", fix="re-run training or copy the whole run folder",
                              path=directory)
    model = create_model(manifest.backbone, num_classes=manifest.num_classes, dropout=manifest.dropout)
    try:
        model.load_state_dict(load_file(str(weights)))
    except Exception as exc:  # a truncated or foreign file
        raise CheckpointError(f"cannot load weights ({exc})", fix="re-run training", path=weights) from exc
    return LoadedRun(directory, model.to(device).eval(), manifest)
