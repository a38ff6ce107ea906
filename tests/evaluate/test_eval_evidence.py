"""The stored figures of the "check this one" flag, on hand-made features and probabilities."""

from __future__ import annotations

import numpy as np

from monkeysee.data.species import Species
from monkeysee.evaluate.evidence import evidence_summary
from monkeysee.models.evidence import EvidenceBank

SPECIES = (Species("a", "alpha"), Species("b", "beta"))


def test_flagged_and_unflagged_error_rates_and_examples_order() -> None:
    # training photos: three of alpha along x, three of beta along y
    bank = EvidenceBank(np.array([[1, 0], [1, 0.1], [1, 0.2], [0, 1], [0.1, 1], [0.2, 1]]),
                        np.array([0, 0, 0, 1, 1, 1]), np.array([1, 0]), SPECIES)
    feats = np.array([[1, 0], [0, 1], [1, 0.05], [0.05, 1]])  # near alpha, beta, alpha, beta
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])  # answers: a, a, b, b
    targets = np.array([0, 1, 0, 0])  # right, wrong, wrong, wrong
    ranked = np.argsort(-probs, axis=1, kind="stable")[:, :2]
    s = evidence_summary(bank.explain(feats, ranked), probs, targets, ["p0", "p1", "p2", "p3"], examples=3)
    # flagged: photo 1 (answer alpha, neighbours beta) and photo 2 (answer beta, neighbours alpha)
    assert (s["photos"], s["flagged"], s["wrong"], s["errors_flagged"]) == (4, 2, 3, 2)
    assert s["wrong_if_flagged"] == 1.0 and s["wrong_if_not_flagged"] == 0.5
    assert [e["path"] for e in s["examples"]] == ["p1", "p2", "p3"]
    assert s["examples"][0]["evidence"]["check"] is True
    assert s["examples"][0]["answer"] == 0 and s["examples"][0]["target"] == 1
