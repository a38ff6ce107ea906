"""Fusing several photos of one animal: exact values on hand-set probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from monkeysee.sightings import ModelAnswer
from monkeysee.sightings.fusion import Fusion

P = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])


def test_a_poor_photo_counts_for_less() -> None:
    fused = Fusion(poor_weight=0.5, strength=1.5).fuse(P, [True, False])
    # weights 2/3 and 1/3, times 1.5: p1^1 * p2^0.5, renormalised
    expected = np.array([0.6 * 0.2 ** 0.5, 0.3 * 0.7 ** 0.5, 0.1 * 0.1 ** 0.5])
    np.testing.assert_allclose(fused, expected / expected.sum(), rtol=1e-12)
    assert fused.argmax() == 0
    assert Fusion(poor_weight=0.5, strength=1.5).fuse(P, [False, True]).argmax() == 1


def test_equal_photos_at_strength_one_give_the_geometric_mean() -> None:
    fused = Fusion(strength=1.0).fuse(P, [True, True])
    expected = np.sqrt(P[0] * P[1])
    np.testing.assert_allclose(fused, expected / expected.sum(), rtol=1e-12)


def test_one_photo_at_strength_one_is_its_own_answer_and_all_poor_photos_weigh_alike() -> None:
    np.testing.assert_allclose(Fusion(strength=1.0).fuse(P[:1], [False]), P[0], rtol=1e-12)
    np.testing.assert_allclose(Fusion(poor_weight=0.0, strength=1.0).fuse(P, [False, False]),
                               Fusion(strength=1.0).fuse(P, [True, True]), rtol=1e-12)


def test_a_zero_probability_does_not_break_the_answer() -> None:
    fused = Fusion().fuse(np.array([[1.0, 0.0], [0.5, 0.5]]), [True, True])
    assert np.isfinite(fused).all() and fused[0] > 0.999


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="one quality flag per photo"):
        Fusion().fuse(P, [True])


def test_a_sighting_of_poor_photos_is_fused_and_asks_for_another(tiny_run) -> None:
    from monkeysee.predict import Predictor
    from monkeysee.sightings.fusion import answer_sighting
    from tests.conftest import COLOURS, synthetic_photo

    predictor = Predictor.from_run_dir(tiny_run)
    photos = [synthetic_photo(COLOURS["n2"], seed=500 + i) for i in range(2)]  # both judged "noisy"
    assert [predictor.assess(p).problems for p in photos] == [("noisy",), ("noisy",)]
    got = answer_sighting(predictor, photos, run="tiny", fusion=Fusion(0.5, 1.0))
    alone = predictor.predict_images(photos)
    probs = predictor.probabilities(predictor.forward(predictor.prepare(photos)).logits.float().cpu().numpy())
    np.testing.assert_allclose(got.probabilities, Fusion(0.5, 1.0).fuse(probs, [False, False]), rtol=1e-6)
    assert [a.species_hint for a in got.photos] == [p.best.species.display_latin for p in alone]
    assert (got.answer.species_hint, got.answer.rank, got.answer.verdict, got.weights) == \
        ("Caerulea simia", None, "retake", (0.5, 0.5))


def _torn_photos(tiny_run):
    """The tiny run's predictor and two good photos' features, qualities and logits, each photo torn
    between n1 and another species, the surer one (photo 1) naming n0."""
    from dataclasses import replace

    from monkeysee.predict import Predictor
    from tests.conftest import COLOURS, synthetic_photo

    predictor = Predictor.from_run_dir(tiny_run)
    photos = [synthetic_photo(COLOURS["n1"], seed=600 + i) for i in range(2)]
    feats = predictor.forward(predictor.prepare(photos)).features.float().numpy()
    qualities = [replace(predictor.assess(p), ok=True, problems=()) for p in photos]  # taken as good
    logits = np.log(np.array([[0.52, 0.43, 0.05], [0.05, 0.45, 0.50]])) * predictor.calibration.temperature
    return predictor, feats, qualities, logits


def test_two_photos_unsure_between_two_species_fuse_to_the_one_both_find_likely(tiny_run) -> None:
    from monkeysee.sightings.fusion import fuse_answers

    predictor, feats, qualities, logits = _torn_photos(tiny_run)
    probs = predictor.probabilities(logits)
    got = fuse_answers(predictor, logits, feats, qualities, run="tiny")
    np.testing.assert_array_equal(got.probabilities, Fusion().fuse(probs, [True, True]))
    assert [a.species_hint for a in got.photos] == ["Rubra simia", "Caerulea simia"]
    assert probs[0].max() > probs[1].max()
    fused = Fusion().fuse(probs, [True, True])
    assert (got.answer.species_hint, got.answer.rank, got.answer.taxon, got.answer.verdict) == \
        ("Viridis simia", "species", "Viridis simia", "species")
    assert got.answer.probability == float(fused[1]) and got.weights == (1.0, 1.0)


def test_the_fused_probabilities_climb_the_answer_ladder(tiny_run) -> None:
    from monkeysee.data.taxonomy import Taxonomy
    from monkeysee.models.ladder import rungs
    from monkeysee.sightings.fusion import fuse_answers

    predictor, feats, qualities, logits = _torn_photos(tiny_run)
    genus = Taxonomy(("genus",), {"n0": ("Rubra",), "n1": ("Frigida",), "n2": ("Frigida",)}, "test")
    predictor.ladder, predictor.thresholds = rungs(["n0", "n1", "n2"], genus), (0.9, 0.6)
    got = fuse_answers(predictor, logits, feats, qualities, run="tiny")
    # Photo 1: no rank sure enough (n0 0.52 < 0.9, Rubra 0.52 < 0.6); photo 2: Frigida 0.95.
    assert [(a.rank, a.taxon, a.verdict) for a in got.photos] == [(None, None, "unknown"),
                                                                  ("genus", "Frigida", "species")]
    fused = Fusion().fuse(predictor.probabilities(logits), [True, True])
    assert fused[1] < 0.9 and 0.6 <= fused[1] + fused[2] < 0.9  # not sure of n1, sure of its genus
    assert (got.answer.rank, got.answer.taxon, got.answer.species_hint, got.answer.verdict) == \
        ("genus", "Frigida", "Viridis simia", "species")
    predictor.thresholds = (0.9, 0.9)
    assert fuse_answers(predictor, logits, feats, qualities, run="tiny").answer == ModelAnswer(
        run="tiny", rank=None, taxon=None, species_hint="Viridis simia", probability=float(fused[1]),
        verdict="unknown")
