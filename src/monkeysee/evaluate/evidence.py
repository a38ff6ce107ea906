"""How far to trust the "check this one" flag on a split: the error rate of flagged answers against the
rest, and a few photos with their evidence for the report to show (flagged wrong ones first)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from monkeysee.models.evidence import Evidence

EXAMPLES = 6


def evidence_summary(evidence: Sequence[Evidence], probs: np.ndarray, targets: np.ndarray,
                     paths: Sequence[str], examples: int = EXAMPLES) -> dict[str, Any]:
    """The flag's figures on these photos (top-1 answers, with the evidence `predict` gave them) and up to
    `examples` photos with their evidence: flagged and wrong, flagged and right, wrong and not flagged,
    then right and not flagged."""
    answer = np.asarray(probs).argmax(axis=1)  # the first of equal maxima, as the stable sort gave it
    flagged = np.array([e.check for e in evidence], dtype=bool)
    wrong = answer != np.asarray(targets)

    def rate(mask: np.ndarray) -> float | None:
        return float(wrong[mask].mean()) if mask.any() else None

    order = sorted(range(len(evidence)), key=lambda i: (not flagged[i], not wrong[i], i))
    shown = [{"path": str(paths[i]), "target": int(targets[i]), "answer": int(answer[i]),
              "probability": float(probs[i, answer[i]]), "evidence": evidence[i].to_dict()}
             for i in order[:examples]]
    return {"photos": len(evidence), "flagged": int(flagged.sum()), "wrong": int(wrong.sum()),
            "wrong_if_flagged": rate(flagged), "wrong_if_not_flagged": rate(~flagged),
            "errors_flagged": int((wrong & flagged).sum()), "examples": shown}
