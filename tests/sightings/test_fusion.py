"""Fusing several photos of one animal: exact values on hand-set probabilities."""

from __future__ import annotations

import numpy as np
import pytest

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
