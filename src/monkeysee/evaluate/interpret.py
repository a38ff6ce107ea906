"""Interpretation of a trained classifier from its stored predictions (the shape of fastai's interpret.py).

`evaluate` runs the model once and saves an `Interpretation`; the report reloads it to draw the confusion
matrix and the worst photos without touching the model again.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monkeysee.data.species import Species
from monkeysee.errors import CheckpointError
from monkeysee.evaluate.metrics import (
    check_targets,
    compute_metrics,
    confusion_matrix,
    most_confused_pairs,
    sample_losses,
)
from monkeysee.io import atomic_write_bytes

FORMAT = "monkeysee-predictions"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TopLoss:
    """One badly predicted photo: where it is, what it is, what the model said and how sure it was."""

    index: int
    path: str
    target: int
    pred: int
    pred_prob: float
    target_prob: float
    loss: float

    @property
    def correct(self) -> bool:
        return self.target == self.pred

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Interpretation:
    """Stored predictions of one split: class probabilities `(N, C)`, true labels `(N,)` and photo paths."""

    probs: np.ndarray
    targets: np.ndarray
    paths: list[str]
    species: Sequence[Species]

    def __post_init__(self) -> None:
        probs = np.asarray(self.probs)
        if not np.issubdtype(probs.dtype, np.floating):
            probs = probs.astype(np.float64)
        if probs.ndim != 2:
            raise ValueError(f"probs must be (N, C), got shape {probs.shape}")
        if probs.shape[1] != len(self.species):
            raise ValueError(f"probs has {probs.shape[1]} classes but {len(self.species)} species were given")
        if len(self.paths) != len(probs):
            raise ValueError(f"probs has {len(probs)} rows but {len(self.paths)} paths were given")
        self.probs = probs
        self.targets = check_targets(self.targets, probs.shape[1])
        if len(self.targets) != len(probs):
            raise ValueError(f"probs has {len(probs)} rows but targets has {len(self.targets)}")
        self.paths = [str(p) for p in self.paths]
        self.species = tuple(self.species)

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def num_classes(self) -> int:
        return self.probs.shape[1]

    @property
    def preds(self) -> np.ndarray:
        """Predicted class index per photo (argmax; ties go to the lower index)."""
        return self.probs.argmax(axis=1)

    @property
    def losses(self) -> np.ndarray:
        """Per-photo cross-entropy `-log p(true)`, clipped so it stays finite."""
        return sample_losses(self.probs, self.targets)

    def confusion_matrix(self) -> np.ndarray:
        """`(C, C)` counts, rows true, columns predicted."""
        return confusion_matrix(self.targets, self.preds, self.num_classes)

    def most_confused(self, min_count: int = 1) -> list[tuple[str, str, int]]:
        """`(true common name, predicted common name, count)` for mistakes seen at least `min_count` times."""
        names = [s.common_name for s in self.species]
        return [(names[t], names[p], c) for t, p, c in most_confused_pairs(self.confusion_matrix(),
                                                                                  min_count)]

    def top_losses(self, k: int = 9, largest: bool = True) -> list[TopLoss]:
        """The `k` photos with the highest loss (or lowest, with largest=False), worst first.

        Ordered by the unclipped probability of the true class, so photos that all hit the loss clip still
        come out in their real order; equal ones keep dataset order.
        """
        p_true = self.probs[np.arange(len(self)), self.targets]
        order = np.argsort(p_true if largest else -p_true, kind="stable")[: max(k, 0)]
        preds, losses = self.preds, self.losses
        return [
            TopLoss(
                index=int(i),
                path=self.paths[i],
                target=int(self.targets[i]),
                pred=int(preds[i]),
                pred_prob=float(self.probs[i, preds[i]]),
                target_prob=float(p_true[i]),
                loss=float(losses[i]),
            )
            for i in order
        ]

    def metrics(self) -> dict[str, Any]:
        """JSON-ready summary; see `monkeysee.evaluate.metrics.compute_metrics`."""
        return compute_metrics(self.probs, self.targets, self.species)

    def save(self, path: str | Path) -> Path:
        """Write `<path>.npz` (probs, targets) and `<path>.json` (paths, species); returns the .npz path.

        No pickle is involved, so a saved file from elsewhere is safe to load.
        """
        npz, meta_path = _paths(path)
        buf = io.BytesIO()
        np.savez_compressed(buf, probs=self.probs, targets=self.targets)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "num_samples": len(self),
            "num_classes": self.num_classes,
            "species": [s.to_dict() for s in self.species],
            "paths": self.paths,
        }
        atomic_write_bytes(npz, buf.getvalue())
        atomic_write_bytes(meta_path, (json.dumps(meta, indent=1) + "\n").encode())
        return npz

    @classmethod
    def load(cls, path: str | Path) -> Interpretation:
        """Read what `save` wrote; `path` may name the .npz, the .json or their common stem."""
        npz, meta_path = _paths(path)
        for p in (npz, meta_path):
            if not p.is_file():
                raise CheckpointError("saved predictions not found",
                                      fix="run `monkeysee evaluate` on this run folder first", path=p)
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"format is {meta.get('format')!r}, expected {FORMAT!r}")
            with np.load(npz, allow_pickle=False) as arrays:
                probs, targets = arrays["probs"], arrays["targets"]
            return cls(probs=probs, targets=targets, paths=list(meta["paths"]),
                       species=[Species.from_dict(s) for s in meta["species"]])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"saved predictions are damaged ({exc})",
                                  fix="re-run `monkeysee evaluate`", path=npz) from exc


def _paths(path: str | Path) -> tuple[Path, Path]:
    """The .npz and .json that make up one saved Interpretation, from either of them or their stem."""
    path = Path(path)
    base = path.with_suffix("") if path.suffix in {".npz", ".json"} else path
    return base.parent / f"{base.name}.npz", base.parent / f"{base.name}.json"
