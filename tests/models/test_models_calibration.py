"""Temperature scaling recovers a known over-confidence; cross-fitted thresholds never score a photo
against itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monkeysee.errors import CheckpointError, ConfigError
from monkeysee.evaluate.metrics import expected_calibration_error
from monkeysee.models.calibration import (
    Calibration,
    assign_folds,
    crossfit_threshold,
    fit_temperature,
    nll,
)
from monkeysee.models.unknown import get_detector


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _calibrated_set(n: int = 4000, c: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax IS the label distribution: labels are drawn from it, so T = 1 is right."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, (n, c))
    cum = _softmax(z).cumsum(axis=1)
    y = (rng.random((n, 1)) > cum).sum(axis=1)
    return z, np.minimum(y, c - 1)


def test_temperature_recovers_a_fivefold_overconfidence_and_lowers_ece() -> None:
    z, y = _calibrated_set()
    over = z * 5.0
    cal = fit_temperature(over, y)
    assert cal.temperature == pytest.approx(5.0, rel=0.05)
    before = expected_calibration_error(_softmax(over), y)
    after = expected_calibration_error(_softmax(cal.apply(over)), y)
    assert before > 0.15 and after < 0.03
    assert fit_temperature(z, y).temperature == pytest.approx(1.0, rel=0.05)


def test_fitted_temperature_is_the_nll_minimum() -> None:
    z, y = _calibrated_set(n=500, seed=1)
    t = fit_temperature(z * 0.4, y).temperature  # an under-confident model: T < 1 sharpens it
    assert t < 1.0
    assert nll(z * 0.4, y, t) <= min(nll(z * 0.4, y, t * 0.99), nll(z * 0.4, y, t * 1.01))


@pytest.mark.parametrize(("scale", "seed"), [(5.0, 0), (0.3, 1), (1.0, 2)])
def test_fitted_temperature_matches_a_fine_grid_to_1e_4(scale: float, seed: int) -> None:
    z, y = _calibrated_set(n=300, seed=seed)
    z = z * scale
    coarse = np.exp(np.linspace(np.log(0.05), np.log(20.0), 2001))
    best = coarse[np.argmin([nll(z, y, t) for t in coarse])]
    fine = best * np.exp(np.linspace(-0.01, 0.01, 2001))  # steps of 1e-5 in log T
    grid_t = fine[np.argmin([nll(z, y, t) for t in fine])]
    assert fit_temperature(z, y).temperature == pytest.approx(grid_t, rel=1e-4)


def test_a_temperature_beyond_the_bounds_stops_at_the_bound() -> None:
    z, y = _calibrated_set(n=300, seed=3)
    assert fit_temperature(z * 1e-3, y).temperature == pytest.approx(0.05, rel=1e-4)
    assert fit_temperature(z * 100, y, bounds=(0.5, 2.0)).temperature == pytest.approx(2.0, rel=1e-4)


def test_apply_keeps_type_and_ranking_and_round_trips() -> None:
    cal = Calibration(2.0)
    logits = torch.tensor([[2.0, -4.0, 1.0]])
    out = cal.apply(logits)
    assert isinstance(out, torch.Tensor) and torch.equal(out, torch.tensor([[1.0, -2.0, 0.5]]))
    assert np.array_equal(cal.apply(np.array([4.0, 2.0])), np.array([2.0, 1.0]))
    assert cal.to_dict() == {"method": "temperature", "temperature": 2.0}
    assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ConfigError):
        Calibration(0.0)
    with pytest.raises(CheckpointError):
        Calibration.from_dict({"method": "isotonic"})


def test_fit_temperature_accepts_tensors_and_checks_shapes() -> None:
    z, y = _calibrated_set(n=200)
    a = fit_temperature(torch.tensor(z * 3), torch.tensor(y)).temperature
    assert a == pytest.approx(fit_temperature(z * 3, y).temperature)
    with pytest.raises(ValueError, match="targets"):
        fit_temperature(z, y + 10)


def _duplicated_bank(n: int = 20, dim: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n random directions, each stored twice (the same photo twice in the training folder)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    return np.concatenate([x, x]), np.tile(np.arange(n) % 2, 2)


def test_knn_cross_fit_never_lets_a_photo_be_its_own_neighbour() -> None:
    x, y = _duplicated_bank()
    in_sample = get_detector("knn", k=1).fit(x, y).score(None, x)
    assert np.allclose(in_sample, 0.0, atol=1e-6)  # in its own bank every photo finds itself (float32)
    fit = crossfit_threshold("knn", x, y, x[:5], k=1, folds=4)
    assert (fit.folds[:20] == fit.folds[20:]).all()  # a photo and its copy share a fold
    # Held out with its copy, each photo's nearest neighbour is a different random direction: cosine
    # distance ~1 in 64 dimensions, never 0.
    assert fit.train_scores.min() > 0.5
    assert np.allclose(fit.val_scores, 0.0, atol=1e-6)  # validation photos: scored by the full detector
    # Plain folds (no duplicate grouping) would split some pairs and score them 0: the grouping matters.
    plain = assign_folds(y, 4, seed=0)
    assert (plain[:20] != plain[20:]).any()


def test_threshold_keeps_the_target_share_of_pooled_scores() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 8))
    y = np.arange(60) % 3
    val = rng.normal(size=(20, 8))
    fit = crossfit_threshold("mahalanobis", x, y, val, keep=0.9, folds=5, shrinkage=0.1)
    pooled = np.concatenate([fit.train_scores, fit.val_scores])
    assert len(fit.train_scores) == 60
    assert (pooled <= fit.threshold).sum() == 72  # ceil(0.9 * 80)
    assert fit.detector.is_fitted and fit.detector.means.shape == (3, 8)


def test_user_groups_share_a_fold_and_classes_spread_evenly() -> None:
    y = np.repeat([0, 1, 2], 10)
    folds = assign_folds(y, 5, seed=1)
    for c in range(3):
        assert np.bincount(folds[y == c], minlength=5).tolist() == [2, 2, 2, 2, 2]
    x = np.random.default_rng(0).normal(size=(30, 4))
    groups = np.arange(30) // 3  # e.g. three photos of one animal
    fit = crossfit_threshold("knn", x, y, x[:2], folds=5, groups=groups, k=1)
    for g in range(10):
        assert len(set(fit.folds[groups == g].tolist())) == 1
    with pytest.raises(ConfigError, match="folds"):
        assign_folds(y[:3], 5)


def test_logit_only_detectors_calibrate_on_validation_alone() -> None:
    val_logits = np.array([[3.0, 0.0], [1.0, 0.9], [0.0, 4.0], [2.0, 2.0]])
    fit = crossfit_threshold("max_softmax", np.zeros((4, 2)), np.array([0, 1, 0, 1]), None, val_logits,
                             keep=0.75)
    assert fit.train_scores.size == 0
    assert fit.threshold == pytest.approx(1 - _softmax(val_logits[1:2]).max())  # 3 of 4 kept
    with pytest.raises(ConfigError, match="sparkle"):
        crossfit_threshold("sparkle", np.zeros((4, 2)), np.zeros(4, dtype=int), None)


def test_crossfit_memory_stays_near_one_copy_of_the_views() -> None:
    """Cross-fitting holds at most about one extra float32 copy of the views beside them: no float64
    copy and no sorted copies from np.unique(axis=0), which at 76k views x 1280 would cost 3 GB."""
    import tracemalloc

    rng = np.random.default_rng(0)
    n, views = 2000, 4
    x = rng.standard_normal((n * views, 256), dtype=np.float32)
    y = np.tile(np.arange(n) % 10, views)
    tracemalloc.start()
    fit = crossfit_threshold("knn", x, y, x[:50], keep=0.95, groups=np.tile(np.arange(n), views),
                             k=3, max_train=512)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1.5 * x.nbytes, f"peak {peak / x.nbytes:.2f}x the features"
    assert (fit.folds[:n] == fit.folds[n:2 * n]).all()  # all views of one photo share a fold


def test_fewer_distinct_photos_than_folds_make_one_fold_each():
    # Three photos, one stored twice (rows 0 and 3): three distinct groups, so three folds, not five.
    x = np.array([[0.0, 1.0], [1.0, 0.0], [5.0, 5.0], [0.0, 1.0]], dtype=np.float32)
    y = np.array([0, 1, 1, 0])
    fit = crossfit_threshold("knn", x, y, x[:1], folds=5, k=1)
    assert sorted(set(fit.folds.tolist())) == [0, 1, 2] and fit.folds[0] == fit.folds[3]
    # a photo's copy shares its fold, so both are scored against the same two other photos
    assert fit.train_scores[0] == fit.train_scores[3] and fit.train_scores[0] != fit.train_scores[2]
