"""Which stored predictions are worth looking at as photos: the most confused pairs of species with their
clearest examples, and a per-species gallery of right and wrong answers.

A `PhotoPlan` names rows of an `Interpretation` (the stored predictions of one split), so `evaluate`
computes it once, stores it beside the predictions, and the report shows those photos.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from monkeysee.evaluate.interpret import Interpretation
from monkeysee.evaluate.metrics import most_confused_pairs


@dataclass(frozen=True)
class PhotoPlanOptions:
    """How many photos to pick; the report's defaults."""

    confused_pairs: int = 4
    examples_per_pair: int = 3
    gallery_per_species: int = 4
    max_gallery_photos: int = 400  # beyond this, the weakest species (lowest recall) get their place first


@dataclass(frozen=True)
class ConfusedPair:
    """Photos of species `true` that the model called `other` (or, with near misses, ranked second)."""

    true: int
    other: int
    count: int  # photos of this kind in the split
    rows: tuple[int, ...]  # the clearest examples: highest probability for `other` first


@dataclass(frozen=True)
class PhotoPlan:
    """The photos to show, as rows of the stored predictions, and the options that chose them."""

    options: PhotoPlanOptions
    near_misses: bool  # no photo was misclassified: `pairs` are each photo's runner-up species
    pairs: tuple[ConfusedPair, ...]
    gallery: dict[int, tuple[tuple[int, ...], tuple[int, ...]]]  # species -> (right rows, wrong rows)
    gallery_left_out: tuple[int, ...]  # species left out to keep the gallery under its photo budget

    def to_dict(self) -> dict[str, Any]:
        return {
            "options": asdict(self.options),
            "near_misses": self.near_misses,
            "pairs": [asdict(p) | {"rows": list(p.rows)} for p in self.pairs],
            "gallery": [{"species": c, "right": list(r), "wrong": list(w)}
                        for c, (r, w) in self.gallery.items()],
            "gallery_left_out": list(self.gallery_left_out),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PhotoPlan:
        return cls(
            options=PhotoPlanOptions(**d["options"]),
            near_misses=bool(d["near_misses"]),
            pairs=tuple(ConfusedPair(int(p["true"]), int(p["other"]), int(p["count"]), _ints(p["rows"]))
                        for p in d["pairs"]),
            gallery={int(g["species"]): (_ints(g["right"]), _ints(g["wrong"])) for g in d["gallery"]},
            gallery_left_out=_ints(d["gallery_left_out"]),
        )

    def fits(self, interp: Interpretation) -> bool:
        """Whether every row and species named here exists in `interp` (one of other predictions may not)."""
        rows = [r for p in self.pairs for r in p.rows]
        rows += [r for right, wrong in self.gallery.values() for r in right + wrong]
        species = [c for p in self.pairs for c in (p.true, p.other)] + [*self.gallery, *self.gallery_left_out]
        return all(0 <= r < len(interp) for r in rows) and all(0 <= c < interp.num_classes for c in species)


def plan_photos(interp: Interpretation, options: PhotoPlanOptions | None = None) -> PhotoPlan:
    """The confused pairs and the gallery of `interp`, chosen as `options` says."""
    options = options or PhotoPlanOptions()
    pairs, near = confused_pairs(interp, options.confused_pairs, options.examples_per_pair)
    gallery, left_out = gallery_picks(interp, options.gallery_per_species, options.max_gallery_photos)
    return PhotoPlan(options, near, pairs, gallery, left_out)


def confused_pairs(
    interp: Interpretation, pairs: int, per_pair: int
) -> tuple[tuple[ConfusedPair, ...], bool]:
    """The `pairs` most confused (true, predicted) pairs, each with its `per_pair` most confidently wrong
    photos; when nothing is confused, the closest calls (each photo's runner-up) instead, and True."""
    probs, targets, preds = interp.probs, interp.targets, interp.preds
    found = []
    for t, p, count in most_confused_pairs(interp.confusion_matrix())[:pairs]:
        rows = np.flatnonzero((targets == t) & (preds == p))
        rows = rows[np.argsort(-probs[rows, p], kind="stable")][:per_pair]
        found.append(ConfusedPair(t, p, count, tuple(int(i) for i in rows)))
    if found or pairs == 0:
        return tuple(found), False
    masked = probs.copy()
    masked[np.arange(len(targets)), targets] = -1.0
    runner = masked.argmax(axis=1)
    score = masked[np.arange(len(targets)), runner]
    best: dict[tuple[int, int], list[int]] = {}
    for i in np.argsort(-score, kind="stable"):
        best.setdefault((int(targets[i]), int(runner[i])), []).append(int(i))
    near = [ConfusedPair(t, r, len(rows), tuple(rows[:per_pair]))
            for (t, r), rows in list(best.items())[:pairs]]
    return tuple(near), True


def gallery_picks(
    interp: Interpretation, per_species: int, budget: int
) -> tuple[dict[int, tuple[tuple[int, ...], tuple[int, ...]]], tuple[int, ...]]:
    """Per species, up to `per_species` right answers (most confident first) and as many wrong ones (most
    confidently wrong first); over `budget` photos, the species with the lowest recall get their place
    first and the rest are left out (returned second)."""
    if per_species == 0:
        return {}, ()
    probs, targets, preds = interp.probs, interp.targets, interp.preds
    picks = {}
    for c in range(interp.num_classes):
        rows = np.flatnonzero(targets == c)
        right, wrong = rows[preds[rows] == c], rows[preds[rows] != c]
        right = right[np.argsort(-probs[right, c], kind="stable")][:per_species]
        wrong = wrong[np.argsort(-probs[wrong, preds[wrong]], kind="stable")][:per_species]
        picks[c] = (tuple(int(i) for i in right), tuple(int(i) for i in wrong))
    recall = [((targets == c) & (preds == c)).sum() / max(1, int((targets == c).sum()))
              for c in range(interp.num_classes)]
    shown, left_out = {}, []
    for c in sorted(picks, key=lambda c: (recall[c], c)):
        n = sum(map(len, picks[c]))
        if n <= budget:
            shown[c], budget = picks[c], budget - n
        else:
            left_out.append(c)
    return shown, tuple(left_out)


def _ints(values: list[Any]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)
