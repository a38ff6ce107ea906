"""How the answer ladder did on photos of known species: coverage per rank, wrong answers, accuracy at the
returned rank, and the risk–coverage curve of the species rank.

A wrong answer is a species that is not the photo's, or a taxon that does not contain it. A photo with no
answer (rank None: "not one of my species", "take another photo") is neither right nor wrong; it lowers
the coverage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from monkeysee.models.ladder import SPECIES, Rung

CURVE_POINTS = 200


def answer_metrics(ranks: Sequence[str | None], taxa: Sequence[str | None], targets: np.ndarray,
                   ladder: Sequence[Rung], species_names: Sequence[str]) -> dict[str, Any]:
    """Per rank the photos answered there and how many were right; the totals over all ranks.

    `taxa` are the names answered (the species' `species_names` entry at species rank)."""
    n = len(targets)
    by_rank = {r.rank: r for r in ladder}
    per: dict[str, dict[str, Any]] = {r.rank: {"answered": 0, "right": 0} for r in ladder}
    for rank, taxon, y in zip(ranks, taxa, targets, strict=True):
        if rank is None:
            continue
        rung = by_rank[rank]
        truth = species_names[int(y)] if rank == SPECIES else rung.names[rung.index[int(y)]]
        per[rank]["answered"] += 1
        per[rank]["right"] += int(taxon == truth)
    for row in per.values():
        row["coverage"] = row["answered"] / n if n else 0.0
        row["accuracy"] = row["right"] / row["answered"] if row["answered"] else None
    answered = sum(r["answered"] for r in per.values())
    right = sum(r["right"] for r in per.values())
    return {"n": n, "answered": answered, "coverage": answered / n if n else 0.0,
            "wrong": answered - right, "wrong_rate": (answered - right) / n if n else 0.0,
            "accuracy_at_rank": right / answered if answered else None, "ranks": per}


def risk_coverage(probs: np.ndarray, targets: np.ndarray,
                  points: int = CURVE_POINTS) -> dict[str, list[float]]:
    """The species rank's risk–coverage curve: answering the photos whose top probability is highest
    first, the share answered (coverage) against the share of those answers that are wrong (risk), at
    no more than `points` evenly spaced coverages, with the threshold that gives each."""
    confidence = probs.max(axis=1)
    order = np.argsort(-confidence, kind="stable")
    wrong = np.cumsum(probs.argmax(axis=1)[order] != targets[order])
    answered = np.arange(1, len(order) + 1)
    keep = np.unique(np.linspace(0, len(order) - 1, min(points, len(order))).round().astype(int))
    return {"coverage": (answered[keep] / len(order)).tolist(),
            "risk": (wrong[keep] / answered[keep]).tolist(), "threshold": confidence[order][keep].tolist()}


def format_answers(d: dict[str, Any]) -> str:
    """`answer_metrics` as lines for people."""
    right = "-" if d["accuracy_at_rank"] is None else f"{d['accuracy_at_rank']:.2%}"
    lines = [f"answers: {d['answered']}/{d['n']} answered ({d['coverage']:.1%}), right at the rank given "
             f"{right}, wrong {d['wrong']} ({d['wrong_rate']:.2%} of all photos)"]
    for rank, row in d["ranks"].items():
        shown = "-" if row["accuracy"] is None else f"{row['accuracy']:.2%} right"
        lines.append(f"  at {rank:<12} {row['answered']:>6} ({row['coverage']:.1%}), {shown}")
    for rank, names in d.get("closed", {}).items():
        lines.append(f"  never an answer ({rank}, each over the run's answer_max_share of the species): "
                     f"{', '.join(names)}")
    return "\n".join(lines)
