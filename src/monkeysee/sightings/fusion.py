"""Several photos of one animal make one answer: a quality-weighted geometric mean of the photos'
calibrated species probabilities, sharpened by `strength`.

    fused ∝ exp(strength · Σ wᵢ log pᵢ / Σ wᵢ),   wᵢ = 1 for a good photo, `poor_weight` for a poor one

`strength` 1 is the plain geometric mean (as sure as one average photo); `strength` n would be the
product of n independent photos. Photos of one animal are not independent (same pose, light and
camera), so the defaults were chosen on groups of 2-3 degraded validation photos of the monkeys run
(`benchmarks/fusion.py`, lowest log loss over poor_weight 0-1 x strength 1-3): strength 1.25, and poor
photos weighing as much as good ones, because the quality verdict calls most degraded copies poor
(322 of 415 on the test groups) and so does not tell them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from monkeysee.data.collection import restricted
from monkeysee.models.ladder import SPECIES
from monkeysee.sightings.records import ModelAnswer

if TYPE_CHECKING:
    from PIL import Image

    from monkeysee.data.quality import Quality
    from monkeysee.predict import Predictor

POOR_WEIGHT = 1.0
STRENGTH = 1.25
_FLOOR = 1e-12


@dataclass(frozen=True)
class Fusion:
    poor_weight: float = POOR_WEIGHT
    strength: float = STRENGTH

    def weights(self, good: Sequence[bool]) -> np.ndarray:
        return np.where(np.asarray(good, dtype=bool), 1.0, self.poor_weight)

    def fuse(self, probs: np.ndarray, good: Sequence[bool]) -> np.ndarray:
        """One probability vector (classes,) for the photos' calibrated probabilities (photos, classes)."""
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 2 or len(probs) == 0 or len(good) != len(probs):
            raise ValueError(f"need (photos, classes) probabilities and one quality flag per photo, "
                             f"got {probs.shape} and {len(good)}")
        w = self.weights(good)
        w = w / w.sum() if w.sum() > 0 else np.full(len(probs), 1 / len(probs))
        z = self.strength * (w[:, None] * np.log(np.clip(probs, _FLOOR, 1.0))).sum(axis=0)
        z -= z.max()
        e = np.exp(z)
        return e / e.sum()


@dataclass(frozen=True)
class SightingAnswer:
    """The fused answer of a sighting and the answer of each photo alone, with its weight."""

    answer: ModelAnswer
    photos: tuple[ModelAnswer, ...]
    weights: tuple[float, ...]
    probabilities: np.ndarray  # fused, over the run's species


def answer_sighting(predictor: Predictor, images: Sequence[Image.Image], run: str,
                    fusion: Fusion | None = None) -> SightingAnswer:
    """Answer 1-3 photos of one animal in one forward pass: each photo alone, and all of them fused."""
    p = predictor.forward(predictor.prepare(images))
    assert p.features is not None  # a Classifier always has them
    return fuse_answers(predictor, p.logits.float().cpu().numpy(), p.features.float().cpu().numpy(),
                        [predictor.assess(im) for im in images], run, fusion)


def fuse_answers(predictor: Predictor, logits: np.ndarray, feats: np.ndarray, qualities: Sequence[Quality],
                 run: str, fusion: Fusion | None = None,
                 sources: Sequence[str] | None = None) -> SightingAnswer:
    """A sighting's answer from its photos' logits and features (photos, ...) and quality verdicts: each
    photo decided alone, and their calibrated probabilities (within the predictor's collection) fused and
    answered on the answer ladder as one photo's are. The sighting is "not one of my species" when every
    photo is or when no rank reaches its threshold, "take another photo" when no photo is good enough,
    else the ladder's taxon (the species' Latin name at species rank, as the log names species)."""
    fusion = fusion or Fusion()
    sources = sources or [f"photo {i + 1}" for i in range(len(logits))]
    preds = predictor.decide(logits, feats, sources, 3, qualities)
    good = [q.ok for q in qualities]
    fused = fusion.fuse(restricted(predictor.probabilities(logits), predictor.collection), good)
    best = predictor.species[int(fused.argmax())]
    name = best.display_latin or best.display_name
    ladder = predictor.answers(fused[None])[0]
    verdict = ("unknown" if all(pr.unknown for pr in preds) else "retake" if not any(good)
               else "species" if ladder.rank is not None else "unknown")
    said = verdict == "species"
    answer = ModelAnswer(run=run, rank=ladder.rank if said else None,
                         taxon=(name if ladder.rank == SPECIES else ladder.taxon) if said else None,
                         species_hint=name, probability=float(fused.max()), verdict=verdict)
    return SightingAnswer(answer, tuple(ModelAnswer.from_prediction(pr, run) for pr in preds),
                          tuple(float(w) for w in fusion.weights(good)), fused)
