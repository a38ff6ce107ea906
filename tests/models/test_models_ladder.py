"""The answer ladder on a hand-built taxonomy with hand-set probabilities: exact ranks, names, thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from monkeysee.data.taxonomy import Taxonomy
from monkeysee.models.ladder import LadderAnswer, climb, fit_thresholds, rungs

# a1, a2 in genus A; b1 in genus B; A and B in family F; c1 in genus C, family G
TAXONOMY = Taxonomy(("genus", "family"), {"a1": ("A", "F"), "a2": ("A", "F"), "b1": ("B", "F"),
                                          "c1": ("C", "G")}, "hand-built")
LABELS = ("a1", "a2", "b1", "c1")


def test_each_photo_is_answered_at_the_finest_rank_its_probabilities_support():
    probs = np.array([[0.90, 0.05, 0.05, 0.00],
                      [0.45, 0.40, 0.10, 0.05],
                      [0.30, 0.20, 0.35, 0.15],
                      [0.25, 0.25, 0.25, 0.25]])
    answers = climb(probs, rungs(LABELS, TAXONOMY), (0.8, 0.8, 0.8))
    assert answers == [LadderAnswer("species", "a1", 0.9), LadderAnswer("genus", "A", pytest.approx(0.85)),
                       LadderAnswer("family", "F", pytest.approx(0.85)), LadderAnswer(None, None, 0.0)]


def test_a_taxon_holding_more_than_the_share_of_species_is_never_an_answer():
    # F holds 3 of the 4 species (75%), A 2 (50%): at max_share 0.5 only F is closed
    ladder = rungs(LABELS, TAXONOMY, max_share=0.5)
    assert [r.closed for r in ladder] == [frozenset(), frozenset(), frozenset({"F"})]
    assert [r.closed for r in rungs(LABELS, TAXONOMY, max_share=0.74)][2] == frozenset({"F"})
    assert [r.closed for r in rungs(LABELS, TAXONOMY, max_share=0.75)][2] == frozenset()
    probs = np.array([[0.45, 0.40, 0.10, 0.05],    # genus A 0.85
                      [0.30, 0.20, 0.35, 0.15],    # family F 0.85: closed, so no answer
                      [0.05, 0.03, 0.02, 0.90]])   # species c1
    answers = climb(probs, ladder, (0.8, 0.8, 0.8))
    assert answers == [LadderAnswer("genus", "A", pytest.approx(0.85)), LadderAnswer(None, None, 0.0),
                       LadderAnswer("species", "c1", 0.9)]


def test_a_closed_taxon_neither_vouches_for_nor_spoils_its_ranks_threshold():
    # family F holds 3 of 5 species (closed at 0.5), G 2. No species reaches one half, so the family rank
    # sees every photo: F right at 0.99, F wrong at 0.95, G right at 0.9 and 0.8. With F closed the lowest
    # threshold keeping right / (answered + 1) >= 0.65 is 0.8 (2/3); with F open 0.8 scores 3/5: no threshold.
    taxonomy = Taxonomy(("family",), {"a1": ("F",), "a2": ("F",), "a3": ("F",), "g1": ("G",), "g2": ("G",)},
                        "hand-built")
    labels = ("a1", "a2", "a3", "g1", "g2")
    probs = np.array([[0.33, 0.33, 0.33, 0.005, 0.005], [0.32, 0.32, 0.31, 0.03, 0.02],
                      [0.02, 0.04, 0.04, 0.45, 0.45], [0.10, 0.05, 0.05, 0.40, 0.40]])
    targets = np.array([0, 3, 3, 4])
    ladder = rungs(labels, taxonomy, max_share=0.5)
    thresholds = fit_thresholds(probs, targets, ladder, accuracy=0.65)
    assert thresholds == (pytest.approx(1 + 1e-9), pytest.approx(0.8))
    assert [(a.rank, a.taxon) for a in climb(probs, ladder, thresholds)] == [
        (None, None), (None, None), ("family", "G"), ("family", "G")]
    open_ = fit_thresholds(probs, targets, rungs(labels, taxonomy), accuracy=0.65)
    assert open_[1] == pytest.approx(1 + 1e-9)


def test_taxon_probabilities_are_sums_over_their_species():
    genus, family = rungs(LABELS, TAXONOMY)[1:]
    probs = np.array([[0.1, 0.2, 0.3, 0.4]])
    assert genus.names == ("A", "B", "C") and family.names == ("F", "G")
    np.testing.assert_allclose(genus.probabilities(probs), [[0.3, 0.3, 0.4]])
    np.testing.assert_allclose(family.probabilities(probs), [[0.6, 0.4]])


def test_no_threshold_is_below_one_half_so_two_taxa_cannot_both_reach_it():
    answers = climb(np.array([[0.45, 0.45, 0.05, 0.05]]), rungs(LABELS, None), (0.1,))
    assert answers == [LadderAnswer(None, None, 0.0)]


def test_thresholds_are_the_lowest_whose_answers_meet_the_accuracy_with_one_error_added():
    # species confidence 0.99 0.95 0.90 0.80 0.70, right except the 0.80 photo:
    # answered-and-right / (answered + 1) = 1/2, 2/3, 3/4, 3/5, 4/6, so 0.70 needs the third: threshold 0.90
    probs = np.array([[0.99, 0.01], [0.05, 0.95], [0.90, 0.10], [0.80, 0.20], [0.30, 0.70]])
    targets = np.array([0, 1, 0, 1, 1])
    assert fit_thresholds(probs, targets, rungs(("x", "y"), None), accuracy=0.7) == (0.9,)
    assert fit_thresholds(probs, targets, rungs(("x", "y"), None), accuracy=0.8) == (pytest.approx(1 + 1e-9),)


def test_a_coarser_rank_is_fitted_on_the_photos_no_finer_rank_answered():
    ladder = rungs(LABELS, TAXONOMY)
    # two sure photos answered at species; three unsure ones whose genus is right at 0.9 and 0.85 and wrong at
    # 0.8. The last photo's family is right, but one photo alone scores 1/2 < 0.6: family answers nothing.
    probs = np.array([[0.98, 0.01, 0.01, 0.00], [0.01, 0.98, 0.01, 0.00],
                      [0.45, 0.45, 0.05, 0.05], [0.40, 0.45, 0.10, 0.05], [0.40, 0.40, 0.10, 0.10]])
    targets = np.array([0, 1, 1, 0, 2])
    species, genus, family = fit_thresholds(probs, targets, ladder, accuracy=0.6)
    assert (species, genus, family) == (pytest.approx(0.98), pytest.approx(0.85), pytest.approx(1 + 1e-9))
    answers = climb(probs, ladder, (species, genus, family))
    assert [a.rank for a in answers] == ["species", "species", "genus", "genus", None]
