"""Grad-CAM overlays for every (photo, species) pair the report shows, computed in a few big batches.

Sections first say what they will show (`want`); the builder then calls `compute` once, so photos that
several sections share are read and explained once, and the model sees full batches instead of single
photos. Photos that cannot be read are remembered with the reason, and sections show that instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from monkeysee.data.images import load_rgb
from monkeysee.errors import ImageError
from monkeysee.explain import DEFAULT_METHOD, Explainer


class OverlayBank:
    """Model-view crops of photos and Grad-CAM overlays of them for chosen species."""

    def __init__(self, explainer: Callable[[], Explainer], alpha: float = 0.5) -> None:
        self._explainer = explainer  # a factory, so the model is only loaded when something is wanted
        self.alpha = alpha
        self._wanted: dict[tuple[Path, int], None] = {}  # dicts as insertion-ordered sets
        self._wanted_photos: dict[Path, None] = {}
        self._photos: dict[Path, np.ndarray] = {}
        self._problems: dict[Path, str] = {}
        self._overlays: dict[tuple[Path, int], np.ndarray] = {}

    def want(self, path: str | Path, target: int) -> None:
        """Ask for the overlay of `path` explaining class `target` (cheap; nothing is computed yet)."""
        self._wanted[(Path(path), int(target))] = None

    def want_photo(self, path: str | Path) -> None:
        """Ask for the model-view crop only."""
        self._wanted_photos[Path(path)] = None

    def __len__(self) -> int:
        return len(self._wanted)

    def compute(self, batch_size: int = 16) -> None:
        """Read every wanted photo once and explain all wanted pairs, `batch_size` rows per pass."""
        todo = [k for k in self._wanted if k not in self._overlays]
        wanted = dict.fromkeys([*self._wanted_photos, *(p for p, _ in todo)])
        paths = [p for p in wanted if p not in self._photos and p not in self._problems]
        if not paths and not todo:
            return
        explainer = self._explainer()
        inputs: dict[Path, torch.Tensor] = {}
        for path in tqdm(paths, desc="reading photos", unit="photo", disable=None, leave=False):
            try:
                x, seen = explainer.prepare([load_rgb(path, preprocess=explainer.preprocess)])
            except ImageError as exc:
                self._problems[path] = exc.problem
                continue
            inputs[path], self._photos[path] = x[0], seen[0]
        for path in {p for p, _ in todo if p not in inputs and p in self._photos}:
            inputs[path] = explainer.prepare([load_rgb(path, preprocess=explainer.preprocess)])[0][0]
        todo = [(p, t) for p, t in todo if p in inputs]
        with tqdm(total=len(todo), desc="Grad-CAM", unit="map", disable=None, leave=False) as bar:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                x = torch.stack([inputs[p] for p, _ in batch])
                images = np.stack([self._photos[p] for p, _ in batch])
                _, results = explainer.explain_prepared(x, images, (DEFAULT_METHOD,), [t for _, t in batch])
                result = results[DEFAULT_METHOD]
                for key, picture in zip(batch, result.overlays(self.alpha), strict=True):
                    self._overlays[key] = picture
                bar.update(len(batch))

    def photo(self, path: str | Path) -> np.ndarray | None:
        """The photo as the model saw it (RGB uint8), or None when it could not be read."""
        return self._photos.get(Path(path))

    def overlay(self, path: str | Path, target: int) -> np.ndarray | None:
        """The Grad-CAM overlay for `target`, or None when the photo could not be read."""
        return self._overlays.get((Path(path), int(target)))

    def problem(self, path: str | Path) -> str:
        """Why a photo is missing ('' when it is not)."""
        return self._problems.get(Path(path), "")
