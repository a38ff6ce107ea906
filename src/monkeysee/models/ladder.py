"""The answer ladder: an answer at the finest rank the calibrated probabilities support.

A taxon's probability is the sum of its species' probabilities. A photo is answered at species rank when
its most probable species reaches the species threshold, else at genus rank when its most probable genus
reaches the genus threshold, and so on up the ranks; when no rank reaches its threshold there is no
answer (rank None). Thresholds are never below one half, so the taxon answered at a rank is the only
one that can reach it.

A taxon that holds more than `max_share` of the run's species is never an answer (`Rung.closed`): on
the butterflies, "Papilionoidea" holds 80 of the 100 species, so it is right for nearly any photo, says
little more than "one of my species", and is where photos of species the run never saw end up. Such a
photo goes on up the ladder, and with no rank left it has no answer.

`fit_thresholds` chooses them on photos the run did not train on, finest rank first: each rank takes the
lowest threshold at which the photos it would answer (among those no finer rank answered) are right at
least `accuracy` of the time, counted with one error added, so that a handful of photos cannot vouch for
a threshold alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from monkeysee.data.taxonomy import Taxonomy

SPECIES = "species"
FLOOR = 0.5


@dataclass(frozen=True)
class Rung:
    """One rank: the taxon of each species (`index[c]`), the taxa's names and those never answered."""

    rank: str
    names: tuple[str, ...]
    index: np.ndarray
    closed: frozenset[str] = frozenset()

    @cached_property
    def answerable(self) -> np.ndarray:
        """(taxa,) bool: False for a closed taxon (computed once per rung, not per photo batch)."""
        return np.array([n not in self.closed for n in self.names], dtype=bool)

    def probabilities(self, probs: np.ndarray) -> np.ndarray:
        """(N, taxa): each taxon's probability, the sum over its species."""
        out = np.zeros((len(probs), len(self.names)), dtype=np.float64)
        np.add.at(out.T, self.index, np.asarray(probs, dtype=np.float64).T)
        return out


@dataclass(frozen=True)
class LadderAnswer:
    rank: str | None
    taxon: str | None
    probability: float


def rungs(labels: Sequence[str], taxonomy: Taxonomy | None, max_share: float = 1.0) -> tuple[Rung, ...]:
    """The species rung, then one per rank of `taxonomy`, for classes in `labels` order; above species a
    taxon holding more than `max_share` of the species is closed."""
    out = [Rung(SPECIES, tuple(labels), np.arange(len(labels)))]
    if taxonomy is None:
        return tuple(out)
    for rank in taxonomy.ranks:
        taxa = [taxonomy.taxon(label, rank) for label in labels]
        names = tuple(dict.fromkeys(taxa))
        closed = frozenset(n for n, count in Counter(taxa).items() if count > max_share * len(labels))
        out.append(Rung(rank, names, np.array([names.index(t) for t in taxa]), closed))
    return tuple(out)


def climb(probs: np.ndarray, ladder: Sequence[Rung], thresholds: Sequence[float]) -> list[LadderAnswer]:
    """Each photo's answer: the finest rung whose most probable taxon reaches that rung's threshold."""
    rank: list[str | None] = [None] * len(probs)
    taxon: list[str | None] = [None] * len(probs)
    best = np.zeros(len(probs))
    for rung, threshold in zip(ladder, thresholds, strict=True):
        p = rung.probabilities(probs)
        top = p.argmax(axis=1)
        reach = (p.max(axis=1) >= max(threshold, FLOOR)) & rung.answerable[top]
        for i in np.flatnonzero(reach & (best == 0)):
            rank[i], taxon[i], best[i] = rung.rank, rung.names[top[i]], p[i, top[i]]
    return [LadderAnswer(r, t, float(b)) for r, t, b in zip(rank, taxon, best, strict=True)]


def fit_thresholds(probs: np.ndarray, targets: np.ndarray, ladder: Sequence[Rung],
                   accuracy: float) -> tuple[float, ...]:
    """Per rung, the lowest threshold (>= 1/2) whose answers are right `accuracy` of the time or more."""
    open_ = np.ones(len(probs), dtype=bool)
    thresholds = []
    for rung in ladder:
        p = rung.probabilities(probs)
        top = p.argmax(axis=1)
        confidence, right = p.max(axis=1), top == rung.index[targets]
        candidate = open_ & rung.answerable[top]
        order = np.argsort(-confidence[candidate], kind="stable")
        conf, ok = confidence[candidate][order], right[candidate][order]
        answered = np.arange(1, len(conf) + 1)
        meets = (np.cumsum(ok) / (answered + 1) >= accuracy) & (conf >= FLOOR)
        # a threshold must answer every photo at or above it, so it can only stop where confidence drops
        meets &= np.append(conf[1:] < conf[:-1], True)
        threshold = float(conf[np.flatnonzero(meets)[-1]]) if meets.any() else 1.0 + 1e-9
        thresholds.append(max(threshold, FLOOR))
        open_ &= ~(candidate & (confidence >= thresholds[-1]))
    return tuple(thresholds)
