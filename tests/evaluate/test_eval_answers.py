"""evaluate's answer figures on hand-made answers: coverage and accuracy per rank, wrong answers, and the
risk–coverage curve (exact)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from monkeysee.data.taxonomy import Taxonomy
from monkeysee.evaluate.answers import answer_metrics, format_answers, risk_coverage
from monkeysee.evaluate.plots import plot_risk_coverage
from monkeysee.models.ladder import rungs

TAXONOMY = Taxonomy(("genus", "family"), {"a1": ("A", "F"), "a2": ("A", "F"), "b1": ("B", "F"),
                                          "c1": ("C", "G")}, "hand-built")
NAMES = ["pygmy marmoset", "silvery marmoset", "tamarin", "howler"]


def test_coverage_accuracy_and_wrong_answers_per_rank():
    ladder = rungs(("a1", "a2", "b1", "c1"), TAXONOMY)
    ranks = ["species", "species", "species", "genus", "genus", "family", None, None]
    taxa = ["pygmy marmoset", "tamarin", "howler", "A", "A", "F", None, None]
    targets = np.array([0, 2, 0, 1, 2, 3, 0, 1])
    d = answer_metrics(ranks, taxa, targets, ladder, NAMES)
    # species: right, right, wrong (a howler answer for a pygmy marmoset); genus: A holds a2, not b1;
    # family: F does not hold c1
    assert d["ranks"] == {
        "species": {"answered": 3, "right": 2, "coverage": 3 / 8, "accuracy": 2 / 3},
        "genus": {"answered": 2, "right": 1, "coverage": 2 / 8, "accuracy": 1 / 2},
        "family": {"answered": 1, "right": 0, "coverage": 1 / 8, "accuracy": 0.0}}
    assert (d["n"], d["answered"], d["wrong"], d["coverage"], d["wrong_rate"], d["accuracy_at_rank"]) == (
        8, 6, 3, 6 / 8, 3 / 8, 3 / 6)
    assert format_answers(d).splitlines()[0] == (
        "answers: 6/8 answered (75.0%), right at the rank given 50.00%, wrong 3 (37.50% of all photos)")
    assert "never an answer" not in format_answers(d)
    assert format_answers(d | {"closed": {"family": ["F"]}}).splitlines()[-1] == (
        "  never an answer (family, each over the run's answer_max_share of the species): F")


def test_the_risk_coverage_curve_answers_the_surest_photos_first():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    targets = np.array([0, 0, 0, 1])  # the 0.8 photo is wrong
    curve = risk_coverage(probs, targets)
    assert curve == {"coverage": [0.25, 0.5, 0.75, 1.0], "risk": [0.0, 0.5, pytest.approx(1 / 3), 0.25],
                     "threshold": [0.9, 0.8, 0.7, 0.6]}
    assert len(risk_coverage(np.tile(probs, (100, 1)), np.tile(targets, 100), points=50)["coverage"]) == 50


def test_the_curve_is_drawn_with_the_runs_operating_point(tmp_path):
    curve = {"coverage": [0.25, 0.5, 1.0], "risk": [0.0, 0.0, 0.1], "threshold": [0.9, 0.8, 0.5]}
    path = plot_risk_coverage(curve, tmp_path / "eval" / "risk_coverage.png", point=(0.5, 0.0))
    assert Image.open(path).size == (600, 450)
