"""knn_either: known by the stored views or by the clean photos; exact scores, fitting, calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monkeysee.config import TrainConfig
from monkeysee.models.unknown import UnknownDetector
from monkeysee.models.unknown_either import KNNEither, offset_for
from monkeysee.train.finish import unknown_detector

# Two photos, two views each, view-major: clean a, clean b, then their augmented views c and d.
ROWS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])


def test_fit_keeps_the_first_rows_as_the_clean_bank():
    det = KNNEither(k=1, clean_k=1, views=2).fit(ROWS)
    np.testing.assert_array_equal(det.arrays()["bank"], ROWS.astype(np.float32))
    np.testing.assert_array_equal(det.arrays()["clean"], ROWS[:2].astype(np.float32))


def test_score_is_the_nearer_route_with_the_offset_exact():
    q = np.array([[-1.0, 0.0], [1.0, 1.0], [1.0, -1.0]])
    half = 1 - math.sqrt(0.5)
    det = KNNEither(k=1, clean_k=1, views=2).fit(ROWS)
    views, clean = det.routes(q)
    np.testing.assert_allclose(views, [0.0, half, half], atol=1e-6)  # q0 is view c itself
    np.testing.assert_allclose(clean, [1.0, half, half], atol=1e-6)  # q0 is orthogonal-or-opposite to a, b
    def offset(value: float) -> KNNEither:
        return KNNEither.of_routes(det.views_knn, det.clean_knn, 2, value)

    np.testing.assert_allclose(offset(-0.1).score(None, q), [0.0, half - 0.1, half - 0.1], atol=1e-6)
    np.testing.assert_allclose(offset(0.2).score(None, q), [0.0, half, half], atol=1e-6)
    assert offset(0.2).params() == {"k": 1, "max_train": 4096, "seed": 0, "clean_k": 1, "views": 2,
                                    "offset": 0.2}


def test_rows_that_are_not_whole_views_are_refused():
    with pytest.raises(ValueError, match="views=3"):
        KNNEither(views=3).fit(ROWS)


def test_offset_puts_the_clean_routes_threshold_at_the_views_threshold():
    clean_scores = np.arange(100) / 100  # keeping 98 of 100 puts the clean threshold at 0.97
    assert offset_for(0.5, clean_scores, 0.98) == pytest.approx(0.5 - 0.97)


def _photos(n: int = 40, views: int = 3, dim: int = 6, seed: int = 0):
    """Two species; the augmented views are their photos with large noise, as degraded views are."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((2, dim))
    centres[0, 0] = centres[1, 1] = 4.0
    y = np.arange(n) % 2
    clean = centres[y] + rng.normal(size=(n, dim))
    augmented = [clean + 2.5 * rng.normal(size=(n, dim)) for _ in range(views - 1)]
    val_y = np.arange(12) % 2
    val = centres[val_y] + rng.normal(size=(12, dim))
    return np.concatenate([clean, *augmented]).astype(np.float32), y, val.astype(np.float32), rng


def test_calibrated_views_route_is_the_plain_knn_and_the_clean_route_only_adds_known_photos():
    views, y, val, rng = _photos()
    val_logits = np.zeros((len(val), 2))
    plain = unknown_detector(TrainConfig(unknown_detector="knn"), views, y, val_logits, val)
    either = unknown_detector(TrainConfig(unknown_detector="knn_either"), views, y, val_logits, val)
    assert isinstance(either, UnknownDetector) and either.name == "knn_either"
    assert (either.threshold, either.poor_threshold) == (plain.threshold, plain.poor_threshold)
    assert either.state.params["views"] == 3 and either.state.params["clean_k"] == 3
    assert either.keep is not None and 0.95 <= either.keep <= 1.0
    queries = np.concatenate([val, 4.0 * rng.normal(size=(200, views.shape[1]))]).astype(np.float32)
    known_plain = ~plain.is_unknown(np.zeros((len(queries), 2)), queries)
    known_either = ~either.is_unknown(np.zeros((len(queries), 2)), queries)
    assert np.all(known_either[known_plain])  # whatever the views route accepts is accepted
    assert known_either.sum() > known_plain.sum()  # and the clean route accepts more
