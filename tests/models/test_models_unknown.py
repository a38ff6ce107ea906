"""Unknown-photo detection: exact scores on hand-made logits/features, ranking metrics, manifests."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from monkeysee.checkpoint import Manifest
from monkeysee.data.species import Species
from monkeysee.errors import CheckpointError, ConfigError
from monkeysee.models import Classifier, Preprocess
from monkeysee.models.unknown import (
    DETECTORS,
    KNN,
    Energy,
    Mahalanobis,
    MaxLogit,
    MaxSoftmax,
    UnknownDetector,
    auroc,
    build_detector,
    calibrate_threshold,
    fpr_at_tpr,
    get_detector,
    roc_curve,
)
from monkeysee.rundir import RunDir


def test_get_detector_of_an_unknown_name_lists_every_registered_one():
    with pytest.raises(ConfigError, match="choose one of") as info:
        get_detector("odin")
    assert "odin" in str(info.value)
    assert all(name in str(info.value) for name in DETECTORS)


@pytest.mark.parametrize("name", DETECTORS.names())
def test_each_registered_detector_is_found_by_its_own_name(name):
    det = get_detector(name)
    assert det.name == name and isinstance(det, DETECTORS[name])


# --- ranking metrics --------------------------------------------------------------------------------------


def test_auroc_perfect_reversed_and_chance():
    assert auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
    assert auroc(np.full(4, 0.3), np.full(3, 0.3)) == 0.5


def test_auroc_with_ties_exact():
    # Unknown 0.4 beats known 0.1 (1) and ties two 0.4s (1/2 each); unknown 0.8 beats all three: 5/6.
    assert auroc(np.array([0.1, 0.4, 0.4]), np.array([0.4, 0.8])) == pytest.approx(5 / 6, abs=1e-15)


def test_roc_curve_exact_points_on_a_hand_made_set():
    # Thresholds 0.8, 0.4, 0.1 from the top: 0.8 flags one unknown; 0.4 flags the other unknown and
    # two of three known at once (a tie, one diagonal step); 0.1 flags the last known.
    fpr, tpr = roc_curve(np.array([0.4, 0.1, 0.4]), np.array([0.8, 0.4]))
    assert fpr.tolist() == pytest.approx([0.0, 0.0, 2 / 3, 1.0], abs=1e-15)
    assert tpr.tolist() == [0.0, 0.5, 1.0, 1.0]


def test_roc_curve_of_separated_scores_goes_up_then_across():
    fpr, tpr = roc_curve(np.array([1.0, 2.0]), np.array([3.0, 4.0, 5.0, 6.0]))
    assert fpr.tolist() == [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0, 5.0, 6.0])) == 1.0


def test_roc_curve_needs_both_sets():
    with pytest.raises(ValueError, match="one known and one unknown"):
        roc_curve(np.array([]), np.array([1.0]))


def test_auroc_agrees_with_sklearn_on_random_ties():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    known, unknown = rng.integers(0, 6, 40).astype(float), rng.integers(2, 9, 30).astype(float)
    y = np.r_[np.zeros(40), np.ones(30)]
    assert auroc(known, unknown) == pytest.approx(metrics.roc_auc_score(y, np.r_[known, unknown]))


def test_calibrate_threshold_keeps_exactly_the_fraction():
    scores = np.random.default_rng(1).permutation(np.arange(1.0, 21.0))
    t = calibrate_threshold(scores, 0.95)
    assert t == 19.0 and (scores <= t).sum() == 19  # 0.95 * 20 is 19.000000000000004 in floats
    assert calibrate_threshold(scores, 0.5) == 10.0
    assert calibrate_threshold(scores, 1.0) == 20.0
    assert calibrate_threshold(scores, 0.001) == 1.0  # at least one photo kept
    assert calibrate_threshold(np.arange(1.0, 11.0), 0.95) == 10.0  # 9.5 photos -> round up to 10
    with pytest.raises(ConfigError):
        calibrate_threshold(scores, 0.0)


def test_fpr_at_tpr():
    known = np.arange(1.0, 21.0)
    assert fpr_at_tpr(known, np.array([5.0, 19.0, 19.5, 25.0]), 0.95) == 0.5


# --- scores on hand-made inputs --------------------------------------------------------------------------


def test_max_softmax_exact():
    scores = MaxSoftmax().score(np.array([[0.0, math.log(3.0)], [0.0, 0.0]]))
    np.testing.assert_allclose(scores, [0.25, 0.5])
    np.testing.assert_allclose(MaxSoftmax().score(np.zeros((1, 4))), [0.75])


def test_energy_exact_and_stable():
    e = Energy().score(np.array([[0.0, 0.0], [1.0, 2.0], [1000.0, 1000.0]]))
    np.testing.assert_allclose(e, [-math.log(2), -math.log(math.e + math.e**2), -(1000 + math.log(2))])
    t2 = Energy(temperature=2.0).score(np.array([[1.0, 2.0, 3.0]]))
    assert t2[0] == pytest.approx(-2 * math.log(math.exp(0.5) + math.exp(1.0) + math.exp(1.5)))
    with pytest.raises(ConfigError):
        Energy(temperature=0)


def test_max_logit_exact():
    np.testing.assert_array_equal(MaxLogit().score(np.array([[1.0, -2.0, 5.0], [-1.0, -3.0, -2.0]])), [-5, 1])


def test_mahalanobis_exact_on_hand_made_clusters():
    ring = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    feats = np.concatenate([ring, ring + np.array([10.0, 0.0])])
    det = Mahalanobis(shrinkage=0.0).fit(feats, np.r_[np.zeros(4), np.ones(4)].astype(int))
    np.testing.assert_allclose(det.means, [[0, 0], [10, 0]])
    np.testing.assert_allclose(det.precision, np.eye(2) * 2)  # shared covariance diag(1/2, 1/2)
    # [0, 3]: 2 * 9 from class 0, 2 * 109 from class 1 -> nearest is 18.  [9, 0]: 2 * 1 from class 1.
    np.testing.assert_allclose(det.score(None, np.array([[0.0, 3.0], [9.0, 0.0]])), [18.0, 2.0])


def test_knn_exact_cosine_distance():
    det = KNN(k=1).fit(np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]))
    q = np.array([[1.0, 1.0], [5.0, 0.0]])
    np.testing.assert_allclose(det.score(None, q), [1 - math.sqrt(0.5), 0.0], atol=1e-6)
    det3 = KNN(k=3).fit(np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]))
    np.testing.assert_allclose(det3.score(None, q), [1 + math.sqrt(0.5), 2.0], atol=1e-6)


def test_knn_caps_training_bank_deterministically():
    feats = np.random.default_rng(0).normal(size=(100, 4))
    a, b = KNN(max_train=10).fit(feats), KNN(max_train=10).fit(feats)
    assert a.bank.shape == (10, 4)
    np.testing.assert_array_equal(a.bank, b.bank)


def test_feature_detectors_need_fitting_and_features():
    with pytest.raises(ValueError, match="not fitted"):
        Mahalanobis().score(None, np.zeros((1, 2)))
    det = KNN().fit(np.eye(3))
    with pytest.raises(ValueError, match="needs features"):
        det.score(np.zeros((1, 3)), None)


# --- synthetic "backbone": clusters in feature space, a linear head on top ----------------------------------


def _clusters(n_per_class: int = 60, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.zeros((3, dim))
    centres[0, 0], centres[1, 1], centres[2, 2] = 6.0, 6.0, 6.0
    targets = np.repeat(np.arange(3), n_per_class)
    feats = centres[targets] + rng.normal(size=(len(targets), dim))
    head = centres / 6.0  # logits: projection on each class direction

    def sample(n: int, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = where + rng.normal(size=(n, dim))
        return f @ head.T, f

    ood_centre = np.zeros(dim)
    ood_centre[5] = 6.0  # a direction no species uses
    return feats @ head.T, feats, targets, sample, centres, ood_centre


def test_feature_detectors_separate_an_outlier():
    _, feats, targets, sample, centres, ood_centre = _clusters()
    val_logits, val_feats = sample(30, centres[1])
    outlier = ood_centre[None, :]
    for det in (Mahalanobis().fit(feats, targets), KNN(k=5).fit(feats, targets)):
        known = det.score(val_logits, val_feats)
        assert det.score(None, outlier)[0] > known.max(), det.name


def test_manifest_round_trip_gives_identical_scores():
    _, feats, targets, sample, centres, ood_centre = _clusters()
    val_logits, val_feats = sample(40, centres[2])
    test_logits, test_feats = sample(20, ood_centre)
    for name in DETECTORS:
        det = build_detector(name, feats, targets, val_logits, val_feats, keep=0.9)
        assert det.keep == 0.9
        assert (~det.is_unknown(val_logits, val_feats)).sum() == 36
        meta, arrays = det.to_manifest()
        meta = json.loads(json.dumps(meta))
        assert all(k.startswith("unknown.") for k in arrays)
        stored = {**arrays, "head.weight": np.zeros(3)}  # other tensors in the same file are ignored
        back = UnknownDetector.from_manifest(meta, stored)
        assert (back.name, back.threshold, back.keep) == (det.name, det.threshold, det.keep)
        np.testing.assert_array_equal(back.score(test_logits, test_feats), det.score(test_logits, test_feats))


def test_operating_point_overrides():
    det = UnknownDetector("max_logit", threshold=0.0, keep=None)
    logits = np.array([[1.0, 0.5], [-1.0, -2.0]])
    np.testing.assert_array_equal(det.is_unknown(logits), [False, True])
    # Scores are -1 and 1: a threshold of 2 accepts both.
    assert det.with_threshold(2.0).is_unknown(logits).tolist() == [False, False]
    assert det.with_threshold(2.0).keep is None
    moved = det.with_keep(np.arange(10.0), 0.8)
    assert (moved.threshold, moved.keep) == (7.0, 0.8)


def test_damaged_manifest_is_a_checkpoint_error():
    _, feats, targets, sample, centres, _ = _clusters()
    det = build_detector("mahalanobis", feats, targets, *sample(10, centres[0]))
    meta, arrays = det.to_manifest()
    with pytest.raises(CheckpointError, match="damaged"):
        UnknownDetector.from_manifest(meta, {"unknown.means": arrays["unknown.means"]})


@pytest.mark.parametrize("name", DETECTORS.names())
def test_each_detector_round_trips_through_the_run_folder(name, tmp_path):
    """save_checkpoint writes the detector next to a tiny model; load_detector rebuilds the same scores."""
    _, feats, targets, sample, centres, ood_centre = _clusters()
    val_logits, val_feats = sample(40, centres[0])
    test_logits, test_feats = sample(10, ood_centre)
    det = build_detector(name, feats, targets, val_logits, val_feats, keep=0.9)
    torch.manual_seed(0)
    model = Classifier(nn.Sequential(nn.Conv2d(3, 8, 3)), num_features=8, num_classes=3)
    species = tuple(Species(f"n{i}", f"species_{i}") for i in range(3))
    manifest = Manifest(backbone="efficientnet_lite0", species=species, preprocess=Preprocess(32),
                        explain_layer="body.0")
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    written = run.save_checkpoint(model, manifest, det)
    assert written.unknown["name"] == name
    back = RunDir(tmp_path / "run").load_detector()
    assert back is not None
    assert (back.name, back.threshold, back.keep) == (det.name, det.threshold, det.keep)
    for logits, f in ((test_logits, test_feats), (val_logits, val_feats)):
        np.testing.assert_array_equal(back.score(logits, f), det.score(logits, f))
        np.testing.assert_array_equal(back.is_unknown(logits, f), det.is_unknown(logits, f))
    # Saving without a detector removes the old one: a run never keeps a stale detector.
    run.save_checkpoint(model, manifest)
    assert run.load_detector() is None and not run.file("unknown.safetensors").exists()
