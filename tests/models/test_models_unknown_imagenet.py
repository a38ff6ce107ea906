"""ImageNet evidence for unknown photos: exact foreign masses from a hand-made ImageNet head."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from monkeysee.models import create_model
from monkeysee.models.unknown import KNN, UnknownDetector, build_detector
from monkeysee.models.unknown_imagenet import (
    KNNImageNet,
    claimed_classes,
    foreign_mass,
    imagenet_head,
    imagenet_probabilities,
)

# An identity "ImageNet head" over 4 classes: features log(p) have ImageNet probabilities p exactly.
HEAD = (np.eye(4, dtype=np.float32), np.zeros(4, dtype=np.float32))


def _logp(*rows: list[float]) -> np.ndarray:
    return np.log(np.array(rows, dtype=np.float64))


# ImageNet top-1 of species 0's photos: class 0, 0, 2; of species 1's: class 1, 1. Class 3 is nobody's.
TRAIN = _logp([0.85, 0.05, 0.05, 0.05], [0.75, 0.15, 0.05, 0.05], [0.3, 0.1, 0.5, 0.1],
              [0.1, 0.8, 0.05, 0.05], [0.1, 0.8, 0.05, 0.05])
TARGETS = np.array([0, 0, 0, 1, 1])


def test_imagenet_probabilities_are_the_heads_softmax():
    p = imagenet_probabilities(_logp([0.7, 0.2, 0.05, 0.05]), HEAD)
    np.testing.assert_allclose(p, [[0.7, 0.2, 0.05, 0.05]], rtol=1e-6)
    with pytest.raises(ValueError, match="reads 4"):
        imagenet_probabilities(np.zeros((1, 3)), HEAD)


def test_a_class_is_claimed_by_its_share_of_one_species_top_1():
    probs = np.exp(TRAIN)
    assert claimed_classes(probs, TARGETS, 0.5).tolist() == [True, True, False, False]
    assert claimed_classes(probs, TARGETS, 1 / 3).tolist() == [True, True, True, False]  # 1 of species 0's 3
    assert claimed_classes(probs, TARGETS, 1.0).tolist() == [False, True, False, False]
    np.testing.assert_allclose(foreign_mass(np.array([[0.2, 0.1, 0.6, 0.1]]), np.array([1, 1, 0, 0])), [0.7])


def test_score_is_the_larger_of_knn_and_weight_times_foreign_mass():
    det = KNNImageNet(k=1, weight=0.5, claim=0.5, imagenet=HEAD).fit(TRAIN, TARGETS)
    assert det.claimed.tolist() == [True, True, False, False]
    queries = _logp([0.2, 0.1, 0.6, 0.1], [0.85, 0.05, 0.05, 0.05])
    np.testing.assert_allclose(det.evidence(queries), [0.7, 0.1], rtol=1e-6)
    knn = KNN(k=1).fit(TRAIN).score(None, queries)
    np.testing.assert_allclose(det.score(None, queries), np.maximum(knn, [0.35, 0.05]), rtol=1e-6)
    assert det.score(None, queries[1:])[0] == pytest.approx(0.05, abs=1e-6)  # a training photo: kNN 0
    assert knn[0] < 0.35  # near the bank in cosine, so its foreign evidence decides its score


def test_without_an_imagenet_head_the_score_is_the_knn_score():
    det = KNNImageNet(k=2).fit(TRAIN, TARGETS)
    queries = _logp([0.2, 0.1, 0.6, 0.1])
    np.testing.assert_array_equal(det.score(None, queries), KNN(k=2).fit(TRAIN).score(None, queries))
    assert "claimed" not in det.arrays()


def test_bad_weight_or_claim_is_refused():
    with pytest.raises(Exception, match="weight >= 0"):
        KNNImageNet(weight=-1.0)
    with pytest.raises(Exception, match="claim in"):
        KNNImageNet(claim=0.0)


def test_head_and_claimed_classes_round_trip_through_the_manifest():
    known = _logp([0.8, 0.1, 0.05, 0.05], [0.1, 0.8, 0.05, 0.05])
    det = build_detector("knn_imagenet", TRAIN, TARGETS, np.zeros((2, 2)), known, keep=1.0, k=1, claim=0.5,
                         imagenet=HEAD)
    meta, arrays = det.to_manifest()
    assert sorted(arrays) == ["unknown.bank", "unknown.claimed", "unknown.imagenet_bias",
                              "unknown.imagenet_weight"]
    assert meta["params"] == {"k": 1, "max_train": 4096, "seed": 0, "weight": 0.5, "claim": 0.5}
    back = UnknownDetector.from_manifest(json.loads(json.dumps(meta)), arrays)
    queries = _logp([0.2, 0.1, 0.6, 0.1], [0.4, 0.4, 0.1, 0.1])
    np.testing.assert_array_equal(back.score(None, queries), det.score(None, queries))


def test_imagenet_head_comes_from_the_weights_and_is_none_without_a_classifier(tmp_path):
    head = imagenet_head("efficientnet_lite0")
    assert head is not None and head[0].shape == (1000, 1280) and head[1].shape == (1000,)
    reference = create_model("efficientnet_lite0", 1000, pretrained=True).head.fc
    np.testing.assert_array_equal(head[0], reference.weight.detach().numpy())
    body_only = {k: v.contiguous() for k, v in create_model("efficientnet_lite0", 1000).state_dict().items()
                 if k.startswith("body.")}
    torch.save(body_only, tmp_path / "body.pth")  # a .pth keeps the tensors in model order
    assert imagenet_head("efficientnet_lite0", tmp_path / "body.pth") is None
