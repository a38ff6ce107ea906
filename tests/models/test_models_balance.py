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


def test_fit_steps_on_the_weighted_loss() -> None:
    """One full-batch SGD step of the trainer's `fit_epoch` with inverse weights equals a step on the mean of
    per-photo losses times their species' weights, computed here by hand."""
    import copy

    from monkeysee.train.steps import fit_epoch

    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.tensor([0, 0, 0, 0, 0, 1])  # 5 photos of species 0, 1 of species 1
    w = class_weights("inverse", y, 2)
    assert w is not None and w.tolist() == pytest.approx([0.6, 3.0])
    model = torch.nn.Linear(4, 2)
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    cfg = TrainConfig(batch_size=6, label_smoothing=0.0)
    loss, _ = fit_epoch(lambda i, rows, batch: model(x[i]), y, torch.arange(6), opt, sched, cfg, w)
    by_hand = (F.cross_entropy(reference(x), y, reduction="none") * w[y]).mean()
    plain = F.cross_entropy(reference(x), y)
    by_hand.backward()
    for stepped, before in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(stepped, before - 0.5 * before.grad, atol=1e-6)
    assert loss == pytest.approx(by_hand.item(), rel=1e-5)
    assert abs(by_hand.item() - plain.item()) > 1e-3  # the weights did change the loss


def test_an_unknown_weighting_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown class weighting 'balanced'.*none, inverse_sqrt, inverse"):
        TrainConfig(class_weights="balanced")


def test_equal_counts_train_exactly_as_plain_cross_entropy() -> None:
    assert class_weights("inverse_sqrt", torch.tensor([0, 1, 2, 0, 1, 2]), 3) is None
    assert class_weights("inverse", torch.tensor([0, 0, 2, 2]), 3) is None  # an absent species is no tail
    assert TrainConfig().class_weights == "inverse_sqrt"
