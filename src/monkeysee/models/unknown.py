""""Not one of my species": post-hoc unknown-photo detection from a trained classifier's logits and features.

A detector turns `(logits, pooled features)` into a score where higher means "more likely unknown"; a
threshold calibrated on known validation photos (keep 95% of them, say) turns scores into decisions.
Detectors are a name -> class registry, like the backbones; fitted ones keep their state as numpy arrays
plus JSON params so the trainer can store them next to the weights and `predict` can rebuild them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from monkeysee.errors import CheckpointError, ConfigError
from monkeysee.models.neighbours import NeighbourBank
from monkeysee.registry import Registry

ARRAY_PREFIX = "unknown."


def _as_2d(x: np.ndarray | None, what: str) -> np.ndarray:
    if x is None:
        raise ValueError(f"this detector needs {what}, got None")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{what} must be (N, D), got shape {x.shape}")
    return x


def logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(sum(exp(x))) without overflow."""
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


class Detector:
    """A scorer: higher score = more likely not one of the known species.

    Subclasses set `name`, implement `score`, and, if they learn from training features, `fit`,
    `arrays` and `_set_arrays`. Constructor keyword arguments are the JSON params.
    """

    name: ClassVar[str]
    needs_features: ClassVar[bool] = False
    needs_fit: ClassVar[bool] = False
    wants_imagenet_head: ClassVar[bool] = False  # fitted with the backbone's ImageNet classifier too
    two_routes: ClassVar[bool] = False  # a views bank and a clean bank, calibrated apart (unknown_either)

    def fit(self, features: np.ndarray, targets: np.ndarray) -> Detector:
        """Learn from training features; logit-only detectors have nothing to learn."""
        return self

    def score(self, logits: np.ndarray | None, features: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore fitted arrays (the inverse of `arrays`)."""

    @property
    def is_fitted(self) -> bool:
        return True

    @classmethod
    def from_state(cls, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Detector:
        det = cls(**params)
        det._set_arrays(arrays)
        return det


T = TypeVar("T", bound=Detector)
DETECTORS: Registry[type[Detector]] = Registry("unknown-photo detector")


def register_detector(cls: type[T]) -> type[T]:
    """Class decorator: add a detector to `DETECTORS` under its `name`."""
    DETECTORS.add(cls.name, cls)
    return cls


def get_detector(name: str, **params: Any) -> Detector:
    """A fresh (unfitted) detector by registry name."""
    return DETECTORS.get(name)(**params)


@register_detector
class MaxSoftmax(Detector):
    """1 - max softmax probability: the classifier's own lack of confidence."""

    name = "max_softmax"

    def score(self, logits: np.ndarray | None, features: np.ndarray | None = None) -> np.ndarray:
        return 1.0 - softmax(_as_2d(logits, "logits")).max(axis=1)


@register_detector
class Energy(Detector):
    """Free energy -T·logsumexp(logits/T): low total evidence for every class means unknown."""

    name = "energy"

    def __init__(self, temperature: float = 1.0) -> None:
        if temperature <= 0:
            raise ConfigError(f"energy temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def score(self, logits: np.ndarray | None, features: np.ndarray | None = None) -> np.ndarray:
        t = self.temperature
        return -t * logsumexp(_as_2d(logits, "logits") / t, axis=1)


@register_detector
class MaxLogit(Detector):
    """-max logit: unlike softmax, not fooled by one class winning among uniformly weak ones."""

    name = "max_logit"

    def score(self, logits: np.ndarray | None, features: np.ndarray | None = None) -> np.ndarray:
        return -_as_2d(logits, "logits").max(axis=1)


@register_detector
class Mahalanobis(Detector):
    """Squared Mahalanobis distance of the pooled features to the nearest class mean.

    One covariance shared by all classes, shrunk towards a scaled identity by `shrinkage` because
    backbones have more feature dimensions than we have training photos.
    """

    name = "mahalanobis"
    needs_features = True
    needs_fit = True

    def __init__(self, shrinkage: float = 0.01) -> None:
        if not 0.0 <= shrinkage <= 1.0:
            raise ConfigError(f"mahalanobis shrinkage must be in [0, 1], got {shrinkage}")
        self.shrinkage = float(shrinkage)
        self.means: np.ndarray | None = None
        self.precision: np.ndarray | None = None

    def params(self) -> dict[str, Any]:
        return {"shrinkage": self.shrinkage}

    def fit(self, features: np.ndarray, targets: np.ndarray) -> Mahalanobis:
        x = _as_2d(features, "features")
        y = np.asarray(targets, dtype=np.int64)
        if len(y) != len(x) or len(x) == 0:
            raise ValueError(f"need matching, non-empty features and targets, got {len(x)} and {len(y)}")
        classes = np.unique(y)
        means = np.stack([x[y == c].mean(axis=0) for c in classes])
        centred = x - means[np.searchsorted(classes, y)]
        cov = centred.T @ centred / len(x)
        dim = cov.shape[0]
        cov = (1 - self.shrinkage) * cov + self.shrinkage * (np.trace(cov) / dim) * np.eye(dim)
        # Symmetric (pseudo-)inverse through the eigendecomposition: stable when cov is near singular.
        vals, vecs = np.linalg.eigh(cov)
        keep = vals > vals.max() * 1e-12
        self.precision = (vecs[:, keep] / vals[keep]) @ vecs[:, keep].T
        self.means = means
        return self

    @property
    def is_fitted(self) -> bool:
        return self.means is not None and self.precision is not None

    def arrays(self) -> dict[str, np.ndarray]:
        if not self.is_fitted:
            raise ValueError("mahalanobis detector is not fitted")
        return {"means": self.means, "precision": self.precision}  # type: ignore[dict-item]

    def _set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.means = np.asarray(arrays["means"], dtype=np.float64)
        self.precision = np.asarray(arrays["precision"], dtype=np.float64)

    def score(self, logits: np.ndarray | None, features: np.ndarray | None = None) -> np.ndarray:
        if self.means is None or self.precision is None:
            raise ValueError("mahalanobis detector is not fitted: call fit(train_features, train_targets)")
        x = _as_2d(features, "features")
        xp = x @ self.precision
        # |x - m|²_P = xPx - 2 xPm + mPm for every (photo, class mean) pair at once.
        d = (xp * x).sum(axis=1)[:, None] - 2 * xp @ self.means.T
        d += ((self.means @ self.precision) * self.means).sum(axis=1)[None, :]
        return np.maximum(d.min(axis=1), 0.0)


@register_detector
class KNN(Detector):
    """Cosine distance to the k-th nearest L2-normalised training feature.

    The bank is a seeded random subset of at most `max_train` training features, which bounds both the
    checkpoint size and the scoring cost. Scoring is `NeighbourBank`'s exact blocked top-k in float32
    (`benchmarks/knn_bank.py`: 2.2-2.6x faster than a float64 matrix product and ~40x less extra memory
    at 300k features), so a bank of any size costs the bank, not queries x bank.
    """

    name = "knn"
    needs_features = True
    needs_fit = True

    def __init__(self, k: int = 10, max_train: int = 4096, seed: int = 0) -> None:
        if k < 1 or max_train < 1:
            raise ConfigError(f"knn needs k >= 1 and max_train >= 1, got k={k}, max_train={max_train}")
        self.k, self.max_train, self.seed = int(k), int(max_train), int(seed)
        self.bank: np.ndarray | None = None
        self._index: NeighbourBank | None = None

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "max_train": self.max_train, "seed": self.seed}

    def fit(self, features: np.ndarray, targets: np.ndarray | None = None) -> KNN:
        x = _as_2d(None, "features") if features is None else np.asarray(features)
        if x.ndim == 2 and len(x) > self.max_train:  # subsample before any copy: maybe 76k views x 1280
            x = x[np.sort(np.random.default_rng(self.seed).choice(len(x), self.max_train, replace=False))]
        x = _as_2d(x, "features")
        if len(x) == 0:
            raise ValueError("need at least one training feature")
        self.bank = _l2_normalise(x).astype(np.float32)
        self._index = None
        return self

    @property
    def is_fitted(self) -> bool:
        return self.bank is not None

    def arrays(self) -> dict[str, np.ndarray]:
        if self.bank is None:
            raise ValueError("knn detector is not fitted")
        return {"bank": self.bank}

    def _set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.bank = np.asarray(arrays["bank"], dtype=np.float32)
        self._index = None

    def score(self, logits: np.ndarray | None, features: np.ndarray | None = None) -> np.ndarray:
        if self.bank is None:
            raise ValueError("knn detector is not fitted: call fit(train_features, train_targets)")
        if self._index is None:
            self._index = NeighbourBank(self.bank)
        return 1.0 - self._index.kth_similarity(_as_2d(features, "features"), self.k)


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# --- operating-point maths -------------------------------------------------------------------------------


def roc_curve(known_scores: np.ndarray, unknown_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC points `(fpr, tpr)` for telling unknown (positive, higher score) from known photos.

    One point per distinct score, from (0, 0) to (1, 1); tied scores move both rates in one step.
    """
    known = np.asarray(known_scores, dtype=np.float64).ravel()
    unknown = np.asarray(unknown_scores, dtype=np.float64).ravel()
    if known.size == 0 or unknown.size == 0:
        raise ValueError("need at least one known and one unknown score")
    thresholds = np.unique(np.concatenate([known, unknown]))[::-1]
    # Fraction of each set flagged (score >= t) at each threshold, from the highest down.
    tpr = 1.0 - np.searchsorted(np.sort(unknown), thresholds, side="left") / unknown.size
    fpr = 1.0 - np.searchsorted(np.sort(known), thresholds, side="left") / known.size
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])


def auroc(known_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    """P(an unknown photo scores higher than a known one), ties counted as 1/2: the trapezoid area under
    `roc_curve`, whose tied steps are straight diagonals."""
    fpr, tpr = roc_curve(known_scores, unknown_scores)
    return float(np.trapezoid(tpr, fpr))


def calibrate_threshold(known_scores: np.ndarray, keep: float = 0.95) -> float:
    """The lowest threshold that accepts (score <= threshold) at least `keep` of the known photos."""
    scores = np.sort(np.asarray(known_scores, dtype=np.float64).ravel())
    if scores.size == 0:
        raise ValueError("need at least one known score to calibrate a threshold")
    if not 0.0 < keep <= 1.0:
        raise ConfigError(f"keep must be in (0, 1], got {keep}", fix="e.g. 0.95 keeps 95% of known photos")
    # A small tolerance so 0.95 * 20 = 19.000000000000004 still means 19 photos.
    count = max(1, math.ceil(keep * scores.size - 1e-9))
    return float(scores[count - 1])


def fpr_at_tpr(known_scores: np.ndarray, unknown_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of unknown photos wrongly accepted when the threshold keeps `tpr` of the known ones.

    The usual "FPR at 95% TPR" of the out-of-distribution literature, known photos being the positives.
    """
    t = calibrate_threshold(known_scores, tpr)
    unknown = np.asarray(unknown_scores, dtype=np.float64).ravel()
    if unknown.size == 0:
        raise ValueError("need at least one unknown score")
    return float((unknown <= t).mean())


# --- a calibrated detector, as stored in a checkpoint ----------------------------------------------------


@dataclass(frozen=True, eq=False)
class DetectorState:
    """A detector's JSON params and fitted arrays: everything needed to rebuild it."""

    params: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, detector: Detector) -> DetectorState:
        return cls(dict(detector.params()), dict(detector.arrays()))


@dataclass(frozen=True)
class UnknownDetector:
    """A named detector plus its operating point: photos scoring above `threshold` are called unknown.

    `keep` is the fraction of known validation photos the threshold was calibrated to accept, or None
    when the threshold was set by hand. `poor_threshold` is the bar for photos too poor to judge (blurred,
    dark, ...): a degraded photo of a known species scores higher than a clean one, so such a photo is
    called unknown only above this higher bar (calibrated on degraded views of the training photos);
    None means a poor photo is never called unknown.
    """

    name: str
    threshold: float
    keep: float | None
    state: DetectorState = field(default_factory=DetectorState)
    poor_threshold: float | None = None
    _detector: Detector = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, value in (("threshold", self.threshold), ("poor_threshold", self.poor_threshold)):
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"unknown-photo {name.replace('_', ' ')} must be a finite number, "
                                  f"not {value}", fix="pass a number, or calibrate the detector again")
        object.__setattr__(self, "_detector", DETECTORS[self.name].from_state(self.state.params,
                                                                               self.state.arrays))

    @property
    def needs_features(self) -> bool:
        return self._detector.needs_features

    def score(self, logits: np.ndarray | None, features: np.ndarray | None = None) -> np.ndarray:
        """Unknown-ness per photo; `features` may be None for the logit-only detectors."""
        return self._detector.score(logits, features)

    def is_unknown(self, logits: np.ndarray, features: np.ndarray | None = None) -> npt.NDArray[np.bool_]:
        return self.score(logits, features) > self.threshold

    def with_keep(self, known_scores: np.ndarray, keep: float) -> UnknownDetector:
        """Same detector, threshold re-calibrated to accept `keep` of these known photos' scores."""
        return replace(self, threshold=calibrate_threshold(known_scores, keep), keep=float(keep))

    def with_threshold(self, threshold: float) -> UnknownDetector:
        """Same detector with a hand-set threshold (keep becomes unknown); the bar for poor photos moves
        by the same amount."""
        shift = float(threshold) - self.threshold
        poor = None if self.poor_threshold is None else self.poor_threshold + shift
        return replace(self, threshold=float(threshold), keep=None, poor_threshold=poor)

    def decide(self, scores: np.ndarray, poor: np.ndarray) -> npt.NDArray[np.bool_]:
        """Unknown per photo from its score and whether the photo is too poor to judge."""
        bar = np.where(poor, np.inf if self.poor_threshold is None else self.poor_threshold, self.threshold)
        return np.asarray(scores) > np.maximum(bar, self.threshold)

    def to_manifest(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able description plus arrays keyed `unknown.<name>` for a safetensors file."""
        arrays = {f"{ARRAY_PREFIX}{k}": np.ascontiguousarray(v) for k, v in self.state.arrays.items()}
        meta = {
            "name": self.name,
            "threshold": self.threshold,
            "keep": self.keep,
            "poor_threshold": self.poor_threshold,
            "params": dict(self.state.params),
            "arrays": sorted(arrays),
        }
        return meta, arrays

    @classmethod
    def from_manifest(cls, d: Mapping[str, Any], arrays: Mapping[str, Any]) -> UnknownDetector:
        """Rebuild from `to_manifest` output; `arrays` may hold other tensors too (numpy or torch)."""
        try:
            own = {
                key[len(ARRAY_PREFIX) :]: np.asarray(arrays[key])
                for key in d.get("arrays", [])
            }
            keep = d.get("keep")
            return cls(
                name=str(d["name"]),
                threshold=float(d["threshold"]),
                keep=None if keep is None else float(keep),
                state=DetectorState(dict(d.get("params", {})), own),
                poor_threshold=None if d.get("poor_threshold") is None else float(d["poor_threshold"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"unknown-photo detector in the manifest is damaged ({exc!r})",
                                  fix="re-run training, or calibrate the detector again") from exc


def build_detector(
    name: str,
    train_features: np.ndarray | None,
    train_targets: np.ndarray | None,
    known_logits: np.ndarray,
    known_features: np.ndarray | None,
    keep: float = 0.95,
    **params: Any,
) -> UnknownDetector:
    """Fit `name` on training features, then set its threshold to keep `keep` of the known val photos."""
    det = get_detector(name, **params)
    if det.needs_fit:
        det.fit(_as_2d(train_features, "training features"), np.asarray(train_targets))
    threshold = calibrate_threshold(det.score(known_logits, known_features), keep)
    return UnknownDetector(name, threshold, float(keep), DetectorState.of(det))


# Importing the module registers its detectors.
from monkeysee.models import unknown_either, unknown_imagenet  # noqa: E402,F401  # isort: skip

__all__ = [
    "DETECTORS",
    "Detector",
    "DetectorState",
    "UnknownDetector",
    "auroc",
    "build_detector",
    "calibrate_threshold",
    "fpr_at_tpr",
    "get_detector",
    "register_detector",
    "roc_curve",
]
