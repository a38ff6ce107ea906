"""Naming species in photos with a trained run: batched, streamed, thread-safe, bad files as error rows.

Everything (species, preprocessing, backbone, unknown detector) comes from the run folder's manifest.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import load_file as load_numpy

from monkeysee.checkpoint import LoadedRun, load_run
from monkeysee.data.images import load_rgb
from monkeysee.data.species import Species
from monkeysee.data.transforms import eval_transform
from monkeysee.errors import MonkeyseeError
from monkeysee.models.unknown import UnknownDetector, softmax
from monkeysee.runtime import autocast, resolve_precision

UNKNOWN_WEIGHTS = "unknown.safetensors"


@dataclass(frozen=True)
class Guess:
    """One candidate species for a photo."""

    index: int
    species: Species
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "label": self.species.label,
            "common_name": self.species.display_name,
            "latin_name": self.species.display_latin,
            "probability": round(self.probability, 6),
        }


@dataclass(frozen=True)
class Prediction:
    """The answer for one photo: top-k guesses and whether it looks like none of the known species.

    `error` is set (and `top` empty) when the photo could not be read.
    """

    source: str
    top: tuple[Guess, ...] = ()
    unknown: bool = False
    unknown_score: float | None = None
    error: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> Guess | None:
        return self.top[0] if self.top else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"source": self.source}
        if self.error is not None:
            d["error"] = self.error
            return d
        best = self.top[0]
        d |= {
            "species": best.species.display_name,
            "latin_name": best.species.display_latin,
            "label": best.species.label,
            "probability": round(best.probability, 6),
            "unknown": self.unknown,
            "unknown_score": None if self.unknown_score is None else round(self.unknown_score, 6),
            "top": [g.to_dict() for g in self.top],
        }
        return d


def load_unknown_detector(run: LoadedRun) -> UnknownDetector | None:
    """The detector calibrated at training time, if the run has one."""
    if not run.manifest.unknown:
        return None
    arrays_path = run.directory / UNKNOWN_WEIGHTS
    arrays = load_numpy(str(arrays_path)) if arrays_path.is_file() else {}
    return UnknownDetector.from_manifest(run.manifest.unknown, arrays)


class Predictor:
    """Batched inference for one trained run. Safe to share between threads (one model, read-only)."""

    def __init__(
        self,
        run: LoadedRun,
        precision: str = "auto",
        unknown_threshold: float | None = None,
        channels_last: bool = True,
    ) -> None:
        self.run = run
        self.model = run.model.eval()
        self.device = next(self.model.parameters()).device
        self.precision = resolve_precision(precision, self.device)
        self.transform = eval_transform(run.manifest.preprocess)
        self.species = run.manifest.species
        self.detector = load_unknown_detector(run)
        if self.detector is not None and unknown_threshold is not None:
            self.detector = self.detector.with_threshold(unknown_threshold)
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        # Explanations add hooks to the model; they take this lock so requests don't see each other's hooks.
        self.lock = threading.RLock()

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, device: str = "cpu", **kwargs: Any) -> Predictor:
        return cls(load_run(run_dir, device=device), **kwargs)

    @torch.inference_mode()
    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and pooled features (what the unknown detectors look at) for a normalised batch."""
        x = x.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.precision, self.device):
            fmap = self.model.body(x)
            pooled = self.model.head.pooled(fmap)
            logits = self.model.head.fc(pooled)
        return logits.float().cpu(), pooled.float().cpu()

    def predict_images(
        self, images: Sequence[Image.Image], top_k: int = 3, sources: Sequence[str] | None = None
    ) -> list[Prediction]:
        """Predictions for already-decoded RGB images."""
        if not images:
            return []
        x = torch.stack([self.transform(im) for im in images])
        logits, feats = self.logits_and_features(x)
        names = sources or [f"image{i}" for i in range(len(images))]
        return self.decide(logits.numpy(), feats.numpy(), names, top_k)

    def decide(
        self, logits: np.ndarray, feats: np.ndarray, sources: Sequence[str], top_k: int
    ) -> list[Prediction]:
        """Top-k species and the unknown verdict from logits and pooled features (one row per photo)."""
        probs = softmax(logits)
        k = max(1, min(top_k, probs.shape[1]))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        scores = unknown = None
        if self.detector is not None:
            scores = self.detector.score(logits, feats)
            unknown = scores > self.detector.threshold
        out = []
        for i, src in enumerate(sources):
            top = tuple(Guess(int(j), self.species[j], float(probs[i, j])) for j in order[i])
            out.append(
                Prediction(
                    source=src,
                    top=top,
                    unknown=bool(unknown[i]) if unknown is not None else False,
                    unknown_score=float(scores[i]) if scores is not None else None,
                )
            )
        return out

    def predict_paths(
        self, paths: Iterable[str | Path], top_k: int = 3, batch_size: int = 32, workers: int = 2
    ) -> Iterator[Prediction]:
        """Stream predictions for any number of photo paths, in order; a bad file yields an error row."""
        for batch in _decoded_batches(paths, batch_size, workers):
            good = [(src, im) for src, im in batch if isinstance(im, Image.Image)]
            preds = iter(self.predict_images([im for _, im in good], top_k, [s for s, _ in good]))
            for src, im in batch:
                yield next(preds) if isinstance(im, Image.Image) else Prediction(source=src, error=im)


def _decode(path: str | Path) -> Image.Image | str:
    try:
        return load_rgb(path)
    except MonkeyseeError as exc:
        return exc.message


def _decoded_batches(
    paths: Iterable[str | Path], batch_size: int, workers: int
) -> Iterator[list[tuple[str, Image.Image | str]]]:
    """Decode photos in a thread pool (PIL releases the GIL), at most three batches ahead, in order."""
    todo = iter(paths)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque[tuple[str, Future]] = deque(
            (str(p), pool.submit(_decode, p)) for p in islice(todo, batch_size * 3)
        )
        batch: list[tuple[str, Image.Image | str]] = []
        while pending:
            src, fut = pending.popleft()
            for p in islice(todo, 1):
                pending.append((str(p), pool.submit(_decode, p)))
            batch.append((src, fut.result()))
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
