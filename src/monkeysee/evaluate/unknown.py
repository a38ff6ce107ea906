"""Does the model know what it does not know: the unknown-photo detector's scores of the split's own photos
and of a folder of photos of no known species, stored beside the split's predictions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from monkeysee.data.images import is_sidecar, iter_photos
from monkeysee.errors import DataError

if TYPE_CHECKING:
    from monkeysee.predict import Predictor


@dataclass(frozen=True, eq=False)
class OtherPhotos:
    """Scores of photos of no known species: an evenly spaced sample of `total` photos in `folder`."""

    folder: str
    total: int
    max_photos: int
    scores: np.ndarray
    unreadable: int

    @property
    def sampled(self) -> int:
        return len(self.scores) + self.unreadable


@dataclass(frozen=True, eq=False)
class UnknownScores:
    """Detector `detector`'s scores (higher: less like any known species) of the split's readable photos
    (`known`), and of photos of other things when a folder of them was scored."""

    detector: str
    known: np.ndarray
    other: OtherPhotos | None = None

    def to_dict(self) -> dict[str, Any]:
        other = None if self.other is None else {
            "folder": self.other.folder, "total": self.other.total, "max_photos": self.other.max_photos,
            "scores": self.other.scores.tolist(), "unreadable": self.other.unreadable}
        return {"detector": self.detector, "known": self.known.tolist(), "other": other}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UnknownScores:
        o = d.get("other")
        other = None if o is None else OtherPhotos(
            str(o["folder"]), int(o["total"]), int(o["max_photos"]),
            np.asarray(o["scores"], dtype=np.float64), int(o["unreadable"]))
        return cls(str(d["detector"]), np.asarray(d["known"], dtype=np.float64), other)

    def with_other(self, other: OtherPhotos) -> UnknownScores:
        return UnknownScores(self.detector, self.known, other)


def score_photos(predictor: Predictor, paths: list[Path], batch_size: int = 32,
                 what: str = "photos") -> tuple[np.ndarray, int]:
    """Unknown-detector scores of the readable photos among `paths`, and how many were unreadable."""
    scores, bad = [], 0
    preds = predictor.predict_paths(paths, top_k=1, batch_size=batch_size)
    for pred in tqdm(preds, total=len(paths), desc=what, unit="photo", disable=None, leave=False):
        if pred.error is not None or pred.unknown_score is None:
            bad += 1
        else:
            scores.append(pred.unknown_score)
    return np.asarray(scores, dtype=np.float64), bad


def other_photos(folder: Path) -> list[Path]:
    """The photos in a folder of photos of no known species (sidecar files left out)."""
    if not folder.is_dir():
        raise DataError("unknown-photo folder not found", fix="pass --ood DIR, a folder of photos",
                        path=folder)
    photos = [p for p in iter_photos(folder) if not is_sidecar(p)]
    if not photos:
        raise DataError("no photos in the unknown-photo folder", fix="put photos of other things in it",
                        path=folder)
    return photos


def score_other_photos(
    predictor: Predictor, folder: Path, max_photos: int, batch_size: int = 32
) -> OtherPhotos:
    """Scores of an evenly spaced sample of at most `max_photos` photos of `folder`."""
    paths = other_photos(folder)
    sampled = paths[:: max(1, math.ceil(len(paths) / max_photos))]
    scores, unreadable = score_photos(predictor, sampled, batch_size, "unknown photos")
    return OtherPhotos(str(folder), len(paths), max_photos, scores, unreadable)
