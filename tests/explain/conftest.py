"""Tiny hand-weighted classifiers whose class activation maps can be worked out on paper."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from monkeysee.models import Classifier


def hook_count(model: nn.Module) -> int:
    """Forward, forward-pre and backward hooks registered on any module of `model`. torch lists a module's
    hooks only in its private dicts (there is no public way to ask), so this is the one place that reads
    them: explaining must leave none behind."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )


def _identity_conv(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels)[:, :, None, None])
    return conv


def gap_model(fc_weight: list[list[float]]) -> Classifier:
    """body.stage1 = identity 1x1 conv + ReLU (so A = relu(x)), then the head: mean pool + linear.

    Gradients at body.stage1 are W[c, k] / (h*w), the same at every position.
    """
    body = nn.Sequential(OrderedDict(stage1=nn.Sequential(_identity_conv(2), nn.ReLU())))
    model = Classifier(body, num_features=2, num_classes=len(fc_weight), dropout=0.0)
    with torch.no_grad():
        model.head.fc.weight.copy_(torch.tensor(fc_weight))
        model.head.fc.bias.zero_()
    return model.eval()


def two_stage_model(
    mix: list[list[float]], mix_bias: list[float], fc_weight: list[list[float]]
) -> Classifier:
    """body.stage1 = identity + ReLU, body.stage2 = 1x1 conv `mix` + bias + ReLU, then mean pool + linear.

    Gradients at body.stage1 vary with position: they pass only where stage2's ReLU is open.
    """
    mixer = nn.Conv2d(2, 2, 1)
    with torch.no_grad():
        mixer.weight.copy_(torch.tensor(mix)[:, :, None, None])
        mixer.bias.copy_(torch.tensor(mix_bias))
    body = nn.Sequential(
        OrderedDict(
            stage1=nn.Sequential(_identity_conv(2), nn.ReLU()),
            stage2=nn.Sequential(mixer, nn.ReLU()),
        )
    )
    model = Classifier(body, num_features=2, num_classes=len(fc_weight), dropout=0.0)
    with torch.no_grad():
        model.head.fc.weight.copy_(torch.tensor(fc_weight))
        model.head.fc.bias.zero_()
    return model.eval()


def small_cnn(seed: int = 0, stride: int = 2, classes: int = 4, fc_scale: float = 20.0) -> Classifier:
    """A random little CNN with BatchNorm: 3 -> 8 (stride) -> 12 channels, 4 classes."""
    g = torch.Generator().manual_seed(seed)
    body = nn.Sequential(
        OrderedDict(
            stage1=nn.Sequential(nn.Conv2d(3, 8, 3, stride=stride, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
            stage2=nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.ReLU()),
        )
    )
    model = Classifier(body, num_features=12, num_classes=classes, dropout=0.1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        model.head.fc.weight.mul_(fc_scale)
        bn = model.body.stage1[1]
        bn.running_mean.copy_(torch.randn(8, generator=g) * 0.1)
        bn.running_var.copy_(torch.rand(8, generator=g) + 0.5)
    return model.eval()


@pytest.fixture
def gap():
    return gap_model([[2.0, -1.0], [-1.0, 1.0]])


@pytest.fixture
def gap_input() -> torch.Tensor:
    """A0 = [[1, 2], [0, 1]], A1 = [[0, 1], [3, 0]]; both have mean 1, so the logits are (1, 0)."""
    return torch.tensor([[[[1.0, 2.0], [0.0, 1.0]], [[0.0, 1.0], [3.0, 0.0]]]])


@pytest.fixture
def cnn() -> Classifier:
    return small_cnn()


@pytest.fixture
def photos() -> torch.Tensor:
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def build():
    """The model builders above, for tests that need their own weights."""
    return {"gap": gap_model, "two_stage": two_stage_model, "small_cnn": small_cnn}
