"""Class weights for long-tailed species lists: exact values, and what they do to the loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from monkeysee.config import TrainConfig
from monkeysee.errors import ConfigError
from monkeysee.models.balance import class_weights


def test_weights_are_normalised_to_a_mean_of_one_per_photo() -> None:
    targets = torch.tensor([0, 1, 1, 1])  # 1 photo of species 0, 3 of species 1, none of species 2
    assert class_weights("none", targets, 3) is None
    inv_sqrt = class_weights("inverse_sqrt", targets, 3)
    scale = 4 / (1 + 3 / math.sqrt(3))
    assert inv_sqrt is not None
    assert inv_sqrt.tolist() == pytest.approx([scale, scale / math.sqrt(3), scale], rel=1e-6)
    inverse = class_weights("inverse", targets, 3)
    assert inverse is not None
    assert inverse.tolist() == pytest.approx([2.0, 2 / 3, 2.0], rel=1e-6)
    assert float((inverse[targets]).mean()) == pytest.approx(1.0)  # the loss keeps its scale
    per_species = torch.zeros(3).index_add_(0, targets, inverse[targets])
    assert per_species[:2].tolist() == pytest.approx([2.0, 2.0])  # each present species weighs the same


def test_inverse_weights_make_a_rare_species_error_count_like_a_common_one() -> None:
    """The loss _fit minimises: per-photo cross-entropy times its species' weight, averaged."""
    logits = torch.tensor([[0.0, 2.0]] * 4)  # every photo called species 1: only the rare one is wrong
    targets = torch.tensor([0, 1, 1, 1])
    per_photo = F.cross_entropy(logits, targets, reduction="none")
    w = class_weights("inverse", targets, 2)
    assert w is not None
    weighted = float((per_photo * w[targets]).mean())
    plain = float(per_photo.mean())
    # plain: the rare photo's loss is 1/4 of the mean; weighted: 1/2 (2 x its loss out of 4 photos)
    assert weighted == pytest.approx(float(per_photo[0] * 2 + per_photo[1:].sum() * 2 / 3) / 4)
    assert weighted > plain


def test_an_unknown_weighting_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown class weighting 'balanced'.*none, inverse_sqrt, inverse"):
        TrainConfig(class_weights="balanced")


def test_equal_counts_train_exactly_as_plain_cross_entropy() -> None:
    assert class_weights("inverse_sqrt", torch.tensor([0, 1, 2, 0, 1, 2]), 3) is None
    assert class_weights("inverse", torch.tensor([0, 0, 2, 2]), 3) is None  # an absent species is no tail
    assert TrainConfig().class_weights == "inverse_sqrt"
