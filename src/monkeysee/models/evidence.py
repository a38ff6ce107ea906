"""The evidence behind an answer: the nearest training photos of the answered species and of the
runner-up, the species the answer is most often confused with, and a "check this one" flag when the
nearest training photos side with another species.

`EvidenceBank` holds the L2-normalised pooled features of the training photos (view 0, as the head saw
them), their species, and each species' confusion partner. Search is exact: on CPUs with bfloat16 a
bfloat16 pass over the bank (8x faster than float32 at 10,000 x 1280, `benchmarks/evidence.py`) picks the
candidates, every row within `MARGIN` of the k-th, and those are scored again in float32; a cosine of unit
vectors in bfloat16 is off by at most ~0.006, so the float32 top k is always among them. Ties are broken by
the lower bank row, so the same photo always gets the same neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from monkeysee.data.species import Species
from monkeysee.runtime import bf16_supported

SHOWN = 3  # nearest training photos shown per species
VOTERS = 5  # nearest training photos (any species) whose majority is compared with the answer
MARGIN = 0.02  # bfloat16 candidates kept below the k-th: over 3x the worst rounding of a cosine


def top_rows(sims: np.ndarray, k: int) -> np.ndarray:
    """Positions of the `k` largest values of `sims` (1-D), largest first, ties by the lower position."""
    k = min(int(k), len(sims))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k < len(sims):
        cut = np.partition(sims, len(sims) - k)[len(sims) - k]  # the k-th largest value
        candidates = np.flatnonzero(sims >= cut)  # ascending, every tie at the cut included
    else:
        candidates = np.arange(len(sims))
    return candidates[np.argsort(-sims[candidates], kind="stable")[:k]]


def confusion_partners(probs: np.ndarray, targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Each species' most confused other species, from held-out photos' calibrated probabilities.

    The soft confusion C[s, j] is the mean probability photos of `s` give `j`; a pair's confusion is
    C[s, j] + C[j, s] (either way round), so even a species with few held-out photos has a partner.
    -1 where no held-out photo involves the species (or there is one species)."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    c = np.zeros((num_classes, num_classes))
    counts = np.bincount(targets, minlength=num_classes).astype(np.float64)
    np.add.at(c, targets, probs)
    c /= np.maximum(counts, 1.0)[:, None]
    pair = c + c.T
    np.fill_diagonal(pair, -1.0)
    partner = np.argmax(pair, axis=1)  # ties: the lower index
    has = pair[np.arange(num_classes), partner] > 0
    return np.where(has, partner, -1).astype(np.int64)


@dataclass(frozen=True)
class Neighbour:
    """One training photo: its bank row (the thumbnail's number) and cosine similarity to the photo."""

    row: int
    similarity: float

    def to_dict(self) -> dict[str, Any]:
        return {"photo": self.row, "similarity": round(self.similarity, 6)}


@dataclass(frozen=True)
class SpeciesEvidence:
    """The nearest training photos of one species."""

    index: int
    species: Species
    nearest: tuple[Neighbour, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.species.label, "common_name": self.species.display_name,
                "nearest": [n.to_dict() for n in self.nearest]}


@dataclass(frozen=True)
class Evidence:
    """Why to believe an answer: the nearest training photos of the answer and of the runner-up, the
    species most confused with the answer, and `check` when the `VOTERS` nearest training photos
    favour another species (the majority, `vote`, is not the answer)."""

    species: tuple[SpeciesEvidence, ...]  # the answer first, then the runner-up
    confused_with: Species | None
    confused_index: int | None
    vote: int
    vote_species: Species
    check: bool

    def to_dict(self) -> dict[str, Any]:
        partner = None if self.confused_with is None else {
            "index": self.confused_index, "label": self.confused_with.label,
            "common_name": self.confused_with.display_name}
        return {"species": [s.to_dict() for s in self.species], "confused_with": partner,
                "nearest_vote": {"index": self.vote, "label": self.vote_species.label,
                                 "common_name": self.vote_species.display_name},
                "check": self.check}

    def line(self) -> str:
        """The evidence in words, for the CLI."""
        parts = [f"{s.species.display_name}: " + ", ".join(f"#{n.row} {n.similarity:.2f}" for n in s.nearest)
                 for s in self.species]
        text = "nearest training photos " + "; ".join(parts)
        if self.confused_with is not None:
            text += f"; often confused with {self.confused_with.display_name}"
        if self.check:
            text += f"; CHECK THIS ONE: the nearest photos look more like {self.vote_species.display_name}"
        return text


class EvidenceBank:
    """Training photos' pooled features (N, d) with their species (N,) and each species' partner (S,)."""

    def __init__(self, features: np.ndarray, targets: np.ndarray, partners: np.ndarray,
                 species: Sequence[Species]) -> None:
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"evidence features must be a non-empty (N, d) array, got shape {x.shape}")
        self.features = np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))
        self.targets = np.asarray(targets, dtype=np.int64)
        self.partners = np.asarray(partners, dtype=np.int64)
        self.species = tuple(species)
        if len(self.targets) != len(x) or len(self.partners) != len(self.species):
            raise ValueError(f"{len(x)} features, {len(self.targets)} targets, {len(self.partners)} partners "
                             f"for {len(self.species)} species")
        self.rows_of = [np.flatnonzero(self.targets == s) for s in range(len(self.species))]
        self.every_row = np.arange(len(self.targets))
        self.coarse = torch.from_numpy(self.features).bfloat16() if bf16_supported() else None

    def __len__(self) -> int:
        return len(self.targets)

    def similarities(self, features: np.ndarray) -> np.ndarray:
        """Cosine similarity of each photo (Q, d) to every training photo: (Q, N) float32."""
        q = np.asarray(features, dtype=np.float32)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        return q @ self.features.T

    def nearest_of(self, sims: np.ndarray, species: int, k: int = SHOWN) -> tuple[Neighbour, ...]:
        """The `k` training photos of `species` nearest a photo whose similarities (N,) are `sims`."""
        rows = self.rows_of[species]
        return tuple(Neighbour(int(rows[i]), float(sims[rows[i]])) for i in top_rows(sims[rows], k))

    def vote(self, sims: np.ndarray, k: int = VOTERS) -> tuple[int, np.ndarray]:
        """The majority species among the `k` nearest training photos, and the votes per species (S,).
        A tie goes to the species whose photo is nearest among the tied ones."""
        near = top_rows(sims, k)
        votes = np.bincount(self.targets[near], minlength=len(self.species))
        tied = set(np.flatnonzero(votes == votes.max()).tolist())
        return next(int(self.targets[r]) for r in near if int(self.targets[r]) in tied), votes

    def explain(self, features: np.ndarray, ranked: np.ndarray) -> list[Evidence]:
        """Evidence for each photo (Q, d), given its species ranked best first (Q, >= 1): the answer and the
        runner-up get their nearest photos; `check` is set when another species has more of the `VOTERS`
        nearest training photos than the answer."""
        out = []
        for sims, order in zip(self._search(features, np.asarray(ranked)[:, :2]), np.asarray(ranked),
                               strict=True):
            answer = int(order[0])
            shown = tuple(SpeciesEvidence(int(s), self.species[int(s)], self.nearest_of(sims, int(s)))
                          for s in order[:2])
            vote, votes = self.vote(sims)
            partner = int(self.partners[answer])
            out.append(Evidence(shown, None if partner < 0 else self.species[partner],
                                None if partner < 0 else partner, vote, self.species[vote],
                                bool(votes[vote] > votes[answer])))
        return out

    def _search(self, features: np.ndarray, shown: np.ndarray) -> np.ndarray:
        """Similarities (Q, N) exact (float32) wherever `explain` can look: the `VOTERS` nearest rows and
        the `SHOWN` nearest of each species in `shown` (Q, <= 2) are always exact; with a bfloat16 pass,
        rows that cannot be among those are -inf."""
        if self.coarse is None:
            return self.similarities(features)
        q = np.asarray(features, dtype=np.float32)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        with torch.inference_mode():  # bank @ queries: the fast kernel (queries @ bank.T is ~6x slower)
            qb = torch.from_numpy(q).bfloat16()
            coarse = ((self.coarse @ qb[0])[None] if len(qb) == 1 else (self.coarse @ qb.T).T).float().numpy()
        out = np.full(coarse.shape, -np.inf, dtype=np.float32)
        for i, (approx, kinds) in enumerate(zip(coarse, shown, strict=True)):
            near = [_within(approx, self.every_row, VOTERS)]
            near += [_within(approx, self.rows_of[int(s)], SHOWN) for s in kinds]
            rows = np.unique(np.concatenate(near))
            out[i, rows] = self.features[rows] @ q[i]
        return out


def _within(approx: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The `rows` whose approximate similarity is within `MARGIN` of the k-th largest among them."""
    if len(rows) <= k:
        return rows
    values = approx[rows]
    cut = np.partition(values, len(values) - k)[len(values) - k]
    return rows[values >= cut - MARGIN]
