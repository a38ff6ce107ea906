"""Honest confidence: temperature scaling of the logits, and unknown thresholds from out-of-fold scores.

`fit_temperature` finds the one number T that makes softmax(logits / T) best predict the validation
labels (minimum mean negative log-likelihood); `Calibration(T).apply(logits)` is then used everywhere a
probability is shown. T > 1 softens an over-confident model, T < 1 sharpens a timid one; the ranking,
and so accuracy, is unchanged. The search is scipy's bounded scalar minimisation (Brent's method) on
log T over a bounded range: NLL is unimodal in log T (convex in 1/T), so it cannot miss, needs no
gradient, and cannot step to T <= 0.

`crossfit_threshold` calibrates an unknown-photo threshold on scores the detector did not fit to: each
training photo is scored by a detector fitted on the other folds (for kNN, a photo is never its own
neighbour; exact duplicate features always share a fold), pooled with the validation scores.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from monkeysee.errors import CheckpointError, ConfigError
from monkeysee.models.unknown import DETECTORS, Detector, calibrate_threshold, get_detector

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)

TEMPERATURE_BOUNDS = (0.05, 20.0)


@dataclass(frozen=True)
class Calibration:
    """Divide logits by `temperature` before the softmax; 1.0 is no change."""

    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"calibration temperature must be a positive number, got {self.temperature}")

    def apply(self, logits: ArrayOrTensor) -> ArrayOrTensor:
        """Calibrated logits, same type and shape (numpy array or torch tensor)."""
        return logits / self.temperature

    def to_dict(self) -> dict[str, Any]:
        return {"method": "temperature", "temperature": self.temperature}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        if d.get("method", "temperature") != "temperature" or "temperature" not in d:
            raise CheckpointError(
                f"calibration {d!r} is not a temperature scaling", fix="re-train to write a new manifest"
            )
        return cls(float(d["temperature"]))


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `targets` under softmax(logits / temperature)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float((log_norm - z[np.arange(len(z)), targets]).mean())


def fit_temperature(
    logits: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
    tol: float = 1e-5,
) -> Calibration:
    """The temperature in `bounds` minimising validation NLL (bounded Brent search on log T)."""
    z = np.asarray(logits.detach().cpu() if isinstance(logits, torch.Tensor) else logits, dtype=np.float64)
    y = np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets, dtype=np.int64)
    if z.ndim != 2 or y.shape != (len(z),) or len(z) == 0:
        raise ValueError(f"need logits (N, C) and targets (N,) with N > 0, got {z.shape} and {y.shape}")
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"targets must lie in [0, {z.shape[1]}), got [{y.min()}, {y.max()}]")
    from scipy.optimize import minimize_scalar  # training alone fits; predicting only applies T

    result = minimize_scalar(lambda log_t: nll(z, y, math.exp(log_t)), method="bounded",
                             bounds=(math.log(bounds[0]), math.log(bounds[1])), options={"xatol": tol})
    return Calibration(math.exp(float(result.x)))


# --- cross-fitted unknown threshold ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CrossFitThreshold:
    """A detector fitted on all training photos, with a threshold calibrated on out-of-fold scores.

    `train_scores[i]` came from a detector that never saw training photo i (empty for detectors that
    learn nothing from features: their training-photo scores would come from logits the head was
    fitted on, so only `val_scores` calibrate them).
    """

    name: str
    detector: Detector
    threshold: float
    keep: float
    train_scores: np.ndarray
    val_scores: np.ndarray
    folds: np.ndarray  # fold index per training photo (-1 when not cross-fitted)


def assign_folds(
    targets: np.ndarray, k: int, seed: int = 0, groups: np.ndarray | None = None
) -> np.ndarray:
    """Fold index in [0, k) per photo: photos of one group share a fold; folds balanced per class.

    Groups (e.g. exact duplicate features, or photos of one animal) are shuffled with `seed`, ordered by
    their first photo's class, and dealt round-robin, so every class spreads evenly over the folds.
    """
    targets = np.asarray(targets)
    groups = np.arange(len(targets)) if groups is None else np.asarray(groups)
    if len(groups) != len(targets):
        raise ValueError(f"need one group per photo, got {len(groups)} groups for {len(targets)} photos")
    uniq, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    if len(uniq) < k:
        raise ConfigError(
            f"cannot make {k} folds from {len(uniq)} distinct training photos", fix="use fewer folds"
        )
    order = np.random.default_rng(seed).permutation(len(uniq))
    order = order[np.argsort(targets[first[order]], kind="stable")]
    group_fold = np.empty(len(uniq), dtype=np.int64)
    group_fold[order] = np.arange(len(uniq)) % k
    return group_fold[inverse.ravel()]


def _duplicate_groups(features: np.ndarray) -> np.ndarray:
    """Group id per row: identical feature rows (the same photo stored twice) get the same id.

    Rows are compared by a 64-bit BLAKE2 digest of their bytes, one row at a time, so this costs
    8 bytes per row instead of the sorted copies `np.unique(axis=0)` makes (3 GB at 76k x 1280 views).
    A digest collision can only merge two groups into one fold, which keeps folds honest."""
    digests = np.fromiter(
        (int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little", signed=True)
         for row in np.ascontiguousarray(features)), dtype=np.int64, count=len(features))
    return np.unique(digests, return_inverse=True)[1].ravel()


def crossfit_threshold(
    name: str,
    train_features: np.ndarray,
    train_targets: np.ndarray,
    val_features: np.ndarray | None,
    val_logits: np.ndarray | None = None,
    *,
    keep: float = 0.95,
    folds: int = 5,
    seed: int = 0,
    groups: np.ndarray | None = None,
    **params: Any,
) -> CrossFitThreshold:
    """Fit detector `name` (with `params`) on all training features; calibrate its threshold to keep
    `keep` of the pooled out-of-fold training scores and validation scores.

    `groups` (optional, one id per training photo) keeps related photos in one fold; exact duplicate
    feature rows are always kept together, so a copy of a photo cannot stand in as its neighbour. With
    fewer distinct groups than `folds`, each group is a fold.
    Logit-only detectors need `val_logits` and are calibrated on validation scores alone.
    """
    if name not in DETECTORS:
        get_detector(name)  # raises the ConfigError that lists the choices
    # float32 as the features come: a float64 copy of 76k views x 1280 would be 0.8 GB per copy.
    x = np.asarray(train_features, dtype=np.float32)
    y = np.asarray(train_targets, dtype=np.int64)
    if x.ndim != 2 or y.shape != (len(x),):
        raise ValueError(f"need train features (N, D) and targets (N,), got {x.shape} and {y.shape}")
    detector = get_detector(name, **params).fit(x, y)
    val_scores = np.asarray(detector.score(val_logits, val_features), dtype=np.float64)
    if not detector.needs_fit:
        threshold = calibrate_threshold(val_scores, keep)
        return CrossFitThreshold(name, detector, threshold, keep, np.empty(0), val_scores,
                                 np.full(len(x), -1, dtype=np.int64))

    dup = _duplicate_groups(x)
    if groups is not None:
        # Merge: two photos share a fold if they share a user group or identical features.
        user = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
        dup = _connected(user, dup)
    folds = min(folds, len(np.unique(dup)))  # a small species list has fewer distinct photos than folds
    fold = assign_folds(y, folds, seed, dup)
    oof = np.empty(len(x))
    for f in range(folds):
        held = fold == f
        part = get_detector(name, **params).fit(x[~held], y[~held])
        oof[held] = part.score(None, x[held])
    threshold = calibrate_threshold(np.concatenate([oof, val_scores]), keep)
    return CrossFitThreshold(name, detector, threshold, keep, oof, val_scores, fold)


def _connected(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component id per photo of the graph linking photos that share an `a` id or a `b` id."""
    n = len(a)
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for ids in (a, b):
        first: dict[int, int] = {}
        for i, g in enumerate(ids.tolist()):
            if g in first:
                parent[root(i)] = root(first[g])
            else:
                first[g] = i
    return np.array([root(i) for i in range(n)])
