"""Known by either route: near the training photos' stored views, or near the clean training photos.

The plain `knn` detector's bank holds every stored view of the training photos, degraded ones included,
so that a blurred or meshed photo of a known monkey still has neighbours. That breadth has a price: the
bank reaches towards what the known species are not (a gorilla finds a dark, blurred howler view), so
its threshold must be tight, and a tight threshold turns away sharp photos of known species that happen
to sit apart from the crowd of views. A bank of the clean photos alone separates sharp known photos from
other primates far better but has no neighbours for a photo through wire mesh.

`knn_either` asks both. Its score is `min(views, clean + offset)`: a photo is known when it is within
the views route's threshold of the stored views, or within the clean route's own threshold of the clean
photos. The two thresholds are calibrated separately, each on out-of-fold scores (`train/finish.py`): the
views route keeps `keep` of known photos as the plain `knn` does, the clean route keeps `CLEAN_KEEP`, and
`offset` is the difference of the two thresholds, so that one threshold on the combined score decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from monkeysee.errors import ConfigError
from monkeysee.models.unknown import KNN, Detector, calibrate_threshold, register_detector

CLEAN_K = 3
CLEAN_KEEP = 0.98
"""The clean route's share of known photos kept (out of fold). Chosen on the monkeys' out-of-fold
training photos, validation photos and the tuning half of `other-primates/` (README)."""


@register_detector
class KNNEither(Detector):
    """min(kNN distance to the stored views, kNN distance to the clean photos + `offset`); see the module.

    `views` is the number of stored views per training photo in the fitted rows, view-major (rows
    v*N + i), as the trainer stores them: the first N rows are the clean photos.
    """

    name = "knn_either"
    needs_features = True
    needs_fit = True
    two_routes = True

    def __init__(self, k: int = 10, clean_k: int = CLEAN_K, max_train: int = 4096, seed: int = 0,
                 views: int = 1, offset: float = 0.0) -> None:
        if views < 1:
            raise ConfigError(f"knn_either needs views >= 1, got {views}")
        self.views_knn = KNN(k, max_train, seed)
        self.clean_knn = KNN(clean_k, max_train, seed)
        self.views, self.offset = int(views), float(offset)

    def params(self) -> dict[str, Any]:
        p = self.views_knn.params()
        return {**p, "clean_k": self.clean_knn.k, "views": self.views, "offset": self.offset}

    def fit(self, features: np.ndarray, targets: np.ndarray | None = None) -> KNNEither:
        x = np.asarray(features)
        if x.ndim != 2 or len(x) % self.views:
            raise ValueError(f"knn_either needs (views x photos, D) rows with views={self.views}, "
                             f"got shape {x.shape}")
        self.views_knn.fit(x, targets)
        self.clean_knn.fit(x[: len(x) // self.views], targets)
        return self

    @property
    def is_fitted(self) -> bool:
        return self.views_knn.is_fitted and self.clean_knn.is_fitted

    def arrays(self) -> dict[str, np.ndarray]:
        return {"bank": self.views_knn.arrays()["bank"], "clean": self.clean_knn.arrays()["bank"]}

    def _set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.views_knn._set_arrays({"bank": arrays["bank"]})
        self.clean_knn._set_arrays({"bank": arrays["clean"]})

    def routes(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each photo's distance by the views route and by the clean route (without the offset)."""
        return self.views_knn.score(None, features), self.clean_knn.score(None, features)

    def score(self, logits: np.ndarray | None, features: np.ndarray | None = None) -> np.ndarray:
        if features is None:
            raise ValueError("this detector needs features, got None")
        views, clean = self.routes(features)
        return np.minimum(views, clean + self.offset)

    @classmethod
    def of_routes(cls, views_knn: KNN, clean_knn: KNN, views: int, offset: float) -> KNNEither:
        """The detector made of two fitted kNNs (the calibration fitted them already): `views_knn` on all
        `views` stored views, `clean_knn` on view 0 of each photo."""
        out = cls(views_knn.k, clean_knn.k, views_knn.max_train, views_knn.seed, views, offset)
        out.clean_knn.max_train, out.clean_knn.seed = clean_knn.max_train, clean_knn.seed
        out._set_arrays({"bank": views_knn.arrays()["bank"], "clean": clean_knn.arrays()["bank"]})
        return out


def offset_for(views_threshold: float, clean_scores: np.ndarray, clean_keep: float = CLEAN_KEEP) -> float:
    """The offset that puts the clean route's own threshold (keeping `clean_keep` of `clean_scores`) at
    the views route's threshold."""
    return float(views_threshold - calibrate_threshold(clean_scores, clean_keep))


__all__ = ["CLEAN_K", "CLEAN_KEEP", "KNNEither", "offset_for"]
