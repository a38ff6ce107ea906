"""After the last epoch: the shown probabilities' temperature and the "not one of my species"
detector, both fitted on the best epoch's pooled features."""

from __future__ import annotations

from typing import Any

import numpy as np

from monkeysee.config import TrainConfig
from monkeysee.models.calibration import Calibration, crossfit_threshold, fit_temperature
from monkeysee.models.unknown import (
    DETECTORS,
    KNN,
    DetectorState,
    UnknownDetector,
    build_detector,
    calibrate_threshold,
)
from monkeysee.models.unknown_either import CLEAN_K, CLEAN_KEEP, KNNEither, offset_for
from monkeysee.models.unknown_imagenet import imagenet_head

POOR_KEEP = 0.99
"""A photo too poor to judge is called "not one of my species" only above the bar that keeps this share of
the degraded (augmented) views of known training photos, scored out of fold."""


def calibration(cfg: TrainConfig, val_logits: np.ndarray, val_targets: np.ndarray) -> Calibration:
    """The temperature fitted on the validation photos, or none (T = 1) when asked or when there are
    no validation photos to fit it on."""
    if cfg.calibration != "temperature" or not len(val_targets):
        return Calibration()
    return fit_temperature(val_logits, val_targets)


def unknown_detector(cfg: TrainConfig, train_views: np.ndarray, targets: np.ndarray, val_logits: np.ndarray,
                     val_feats: np.ndarray) -> UnknownDetector:
    """The "not one of my species" detector: its bank holds every stored view of the training photos
    (augmented ones included, so a blurred or dark photo of a known monkey still has neighbours),
    and its threshold keeps `unknown_keep` of clean known photos. With "crossfit" those are the
    clean training photos scored by detectors fitted on the other folds (a photo is never its own
    neighbour: all views of one photo share a fold) pooled with the validation photos, not just the
    small validation split; "val" uses the validation photos alone."""
    n = len(targets)
    view_count = len(train_views) // n
    params = detector_inputs(cfg)
    if cfg.unknown_calibration == "val":
        return build_detector(cfg.unknown_detector, train_views[:n], targets, val_logits, val_feats,
                              keep=cfg.unknown_keep, **params)
    two_routes = DETECTORS.get(cfg.unknown_detector).two_routes
    fit = crossfit_threshold("knn" if two_routes else cfg.unknown_detector, train_views,
                             np.tile(targets, view_count), val_feats, val_logits, keep=cfg.unknown_keep,
                             seed=cfg.seed, groups=np.tile(np.arange(n), view_count), **params)
    known = np.concatenate([fit.train_scores[:n], fit.val_scores])  # view 0 of every photo, and val
    threshold = calibrate_threshold(known, cfg.unknown_keep)
    degraded = fit.train_scores[n:]  # the augmented views, out of fold: how high known photos go
    poor = calibrate_threshold(degraded, POOR_KEEP) if len(degraded) else None
    if two_routes:
        assert isinstance(fit.detector, KNN)
        return either_detector(cfg, fit.detector, view_count, train_views[:n], targets, val_feats, threshold,
                               poor, known)
    state = DetectorState.of(fit.detector)
    return UnknownDetector(cfg.unknown_detector, threshold, cfg.unknown_keep, state, poor)


def either_detector(cfg: TrainConfig, views_knn: KNN, view_count: int, clean_views: np.ndarray,
                    targets: np.ndarray, val_feats: np.ndarray, threshold: float, poor: float | None,
                    views_scores: np.ndarray) -> UnknownDetector:
    """`knn_either` (`models/unknown_either.py`): its views route is the plain kNN calibrated above
    (`views_knn`, `threshold`, `poor`, and the out-of-fold and validation scores `views_scores`); its clean
    route is a kNN on view 0 of each training photo, calibrated out of fold on its own to keep
    `CLEAN_KEEP`. `keep` records the share of those known photos the two routes together accept."""
    fit = crossfit_threshold("knn", clean_views, targets, val_feats, keep=CLEAN_KEEP, seed=cfg.seed,
                             groups=np.arange(len(targets)), k=CLEAN_K)
    assert isinstance(fit.detector, KNN)
    clean_scores = np.concatenate([fit.train_scores, fit.val_scores])
    offset = offset_for(threshold, clean_scores)
    detector = KNNEither.of_routes(views_knn, fit.detector, view_count, offset)
    kept = float(np.mean(np.minimum(views_scores, clean_scores + offset) <= threshold))
    return UnknownDetector(KNNEither.name, threshold, kept, DetectorState.of(detector), poor)


def detector_inputs(cfg: TrainConfig) -> dict[str, Any]:
    """What the chosen detector is fitted with besides the features: the backbone's ImageNet classifier
    for a detector that weighs its evidence (none when the weights hold no classifier)."""
    if not DETECTORS.get(cfg.unknown_detector).wants_imagenet_head:
        return {}
    return {"imagenet": imagenet_head(cfg.backbone, cfg.weights)}
