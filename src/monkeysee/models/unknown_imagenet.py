"""ImageNet evidence for "not one of my species": what the backbone's own ImageNet classifier calls a photo.

A gorilla's pooled features lie close to a mantled howler's, so a nearest-neighbour distance alone lets
many near look-alikes through; yet the ImageNet classifier that ships with the backbone names gorilla,
chimpanzee, orangutan, gibbon, baboon, lemurs and several monkey genera apart. The `knn_imagenet`
detector scores a photo by the larger of its kNN distance and `weight` x the ImageNet probability mass
it puts on *foreign* classes:
ImageNet classes that no known species is taken for. Which classes those are is learned from the
training photos (a class is *claimed* when it is the ImageNet top-1 of at least `claim` of the photos of
some species), so nothing about monkeys is written in: the butterflies' run claims the
ImageNet butterflies, the monkeys' run claims howler, capuchin, marmoset, macaque, langur, ...

The ImageNet head reads the same pooled features as the species head, so the evidence costs one
(1000 x D) matrix product per photo and no second pass. Without an ImageNet head (a backbone whose
weights have none) the score is the kNN score alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monkeysee.errors import ConfigError
from monkeysee.models.unknown import KNN, Detector, register_detector, softmax

ImageNetHead = tuple[np.ndarray, np.ndarray]
"""The ImageNet classifier on the pooled features: weight (classes, D) and bias (classes,)."""


def _rows(features: np.ndarray | None) -> np.ndarray:
    if features is None:
        raise ValueError("this detector needs features, got None")
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}")
    return x


def imagenet_probabilities(features: np.ndarray, head: ImageNetHead) -> np.ndarray:
    """Softmax of the ImageNet head over pooled features (N, D): (N, classes)."""
    weight, bias = head
    x = _rows(features)
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"features have {x.shape[1]} dimensions, the ImageNet head reads {weight.shape[1]}")
    # float32 like the network: a float64 copy of the head would cost more than the product itself
    return softmax(x.astype(np.float32) @ np.asarray(weight, dtype=np.float32).T + bias)


def claimed_classes(probs: np.ndarray, targets: np.ndarray, claim: float) -> np.ndarray:
    """Bool per ImageNet class: at least `claim` of the training photos of some species have it as their
    most probable ImageNet class. (A mean probability would claim too much: every ape class gets a
    few percent of a howler's mass.)"""
    y = np.asarray(targets)
    top = np.asarray(probs).argmax(axis=1)
    claimed = np.zeros(np.asarray(probs).shape[1], dtype=bool)
    for c in np.unique(y):
        classes, counts = np.unique(top[y == c], return_counts=True)
        claimed[classes[counts >= claim * (y == c).sum()]] = True
    return claimed


def foreign_mass(probs: np.ndarray, claimed: np.ndarray) -> np.ndarray:
    """The probability each photo puts on ImageNet classes no known species claims."""
    return np.asarray(probs[:, ~np.asarray(claimed, dtype=bool)].sum(axis=1))


@register_detector
class KNNImageNet(Detector):
    """The larger of the kNN cosine distance and `weight` x the ImageNet probability on foreign classes
    (see the module). A maximum, not a sum: a photo with no foreign evidence keeps its plain kNN score, so
    the calibrated threshold stays where the kNN put it and a photo is only *added* to the unknown ones
    when its evidence alone is above it (at weight 0.5 and the kNN threshold ~0.42: over 84% foreign).

    `imagenet` (the head's weight and bias) is given when fitting and kept with the fitted arrays; it is
    not a JSON param. Without it the detector is the plain kNN.
    """

    name = "knn_imagenet"
    needs_features = True
    needs_fit = True
    wants_imagenet_head = True

    def __init__(self, k: int = 10, max_train: int = 4096, seed: int = 0, weight: float = 0.5,
                 claim: float = 0.05, imagenet: ImageNetHead | None = None) -> None:
        if weight < 0 or not 0.0 < claim <= 1.0:
            raise ConfigError(f"knn_imagenet needs weight >= 0 and claim in (0, 1], got weight={weight}, "
                              f"claim={claim}")
        self.knn = KNN(k, max_train, seed)
        self.weight, self.claim = float(weight), float(claim)
        self.head: ImageNetHead | None = None if imagenet is None else (
            np.asarray(imagenet[0], dtype=np.float32), np.asarray(imagenet[1], dtype=np.float32))
        self.claimed: np.ndarray | None = None

    def params(self) -> dict[str, Any]:
        return {**self.knn.params(), "weight": self.weight, "claim": self.claim}

    def fit(self, features: np.ndarray, targets: np.ndarray) -> KNNImageNet:
        self.knn.fit(features, targets)
        if self.head is not None:
            self.claimed = claimed_classes(imagenet_probabilities(features, self.head), targets, self.claim)
        return self

    @property
    def is_fitted(self) -> bool:
        return self.knn.is_fitted

    def arrays(self) -> dict[str, np.ndarray]:
        out = self.knn.arrays()
        if self.head is not None and self.claimed is not None:
            out |= {"imagenet_weight": self.head[0], "imagenet_bias": self.head[1],
                    "claimed": self.claimed.astype(np.uint8)}
        return out

    def _set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.knn._set_arrays(arrays)
        if "claimed" in arrays:
            self.head = (np.asarray(arrays["imagenet_weight"], dtype=np.float32),
                         np.asarray(arrays["imagenet_bias"], dtype=np.float32))
            self.claimed = np.asarray(arrays["claimed"]).astype(bool)

    def evidence(self, features: np.ndarray) -> np.ndarray:
        """ImageNet probability on foreign classes per photo; zeros without an ImageNet head."""
        x = _rows(features)
        if self.head is None or self.claimed is None:
            return np.zeros(len(x))
        return foreign_mass(imagenet_probabilities(x, self.head), self.claimed)

    def score(self, logits: np.ndarray | None, features: np.ndarray | None = None) -> np.ndarray:
        x = _rows(features)
        return np.maximum(self.knn.score(logits, x), self.weight * self.evidence(x))


def imagenet_head(backbone: str, weights: str | Path | None = None) -> ImageNetHead | None:
    """The ImageNet classifier that ships with `backbone`'s pretrained weights (or the `weights` file), or
    None when they hold none: the loader copies a classifier only when the file has one that fits, so a
    classifier left as initialised means there was none."""
    from monkeysee.models.registry import create_model, get_backbone

    model = create_model(backbone, 1000)
    initial = model.head.fc.weight.detach().clone()
    get_backbone(backbone).load_weights(model, None if weights is None else Path(weights))
    fc = model.head.fc
    if torch.equal(fc.weight.detach(), initial):
        return None
    return fc.weight.detach().float().numpy().copy(), fc.bias.detach().float().numpy().copy()
