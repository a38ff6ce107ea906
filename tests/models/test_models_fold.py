"""Folding BatchNorm into the convolution before it: the same function, fewer passes, the model untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monkeysee.models import available_backbones, create_model
from monkeysee.models.fold import folded


def _with_statistics(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm running statistics and an affine part far from the identity, so a fold
    that ignored any of them would show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
    return module.eval()


def test_a_conv_and_its_batchnorm_fold_to_the_exact_weights():
    conv, bn = nn.Conv2d(1, 1, 1, bias=True), nn.BatchNorm2d(1, eps=1.0)
    with torch.no_grad():
        conv.weight.fill_(2.0)
        conv.bias.fill_(1.0)
        bn.running_mean.fill_(0.5)
        bn.running_var.fill_(3.0)  # + eps = 4: divides by 2
        bn.weight.fill_(3.0)
        bn.bias.fill_(1.0)
    net = folded(nn.Sequential(conv, bn, nn.ReLU()))
    # scale 3 / 2 = 1.5: weight 2 * 1.5 = 3; bias (1 - 0.5) * 1.5 + 1 = 1.75
    assert isinstance(net[1], nn.Identity) and isinstance(net[2], nn.ReLU)
    assert (net[0].weight.item(), net[0].bias.item()) == (3.0, 1.75)
    x = torch.tensor([[[[1.0, -2.0]]]])
    assert torch.equal(net(x), torch.tensor([[[[4.75, 0.0]]]]))  # relu(3x + 1.75)


def test_a_batchnorm_that_does_not_follow_its_conv_is_left_alone():
    model = _with_statistics(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4),
                                           nn.Conv2d(4, 5, 1), nn.BatchNorm2d(4)))
    net = folded(model)
    assert [type(m) for m in net] == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d, nn.Conv2d, nn.BatchNorm2d]


@pytest.mark.parametrize("name", available_backbones())
def test_every_backbone_folds_to_the_same_function_and_keeps_no_batchnorm(name):
    body = _with_statistics(create_model(name, 3, pretrained=False).body)
    before = {k: v.clone() for k, v in body.state_dict().items()}
    net = folded(body)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = body(x), net(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() <= 1e-4 * max(scale, 1.0)
    # the model is exactly as it was: weights, buffers, mode and what trains
    after = body.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not body.training and all(p.requires_grad for p in body.parameters())
    assert not any(p.requires_grad for p in net.parameters())


def test_a_trainable_module_in_train_mode_stays_so():
    model = _with_statistics(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))).train()
    net = folded(model)
    assert model.training and isinstance(model[1], nn.BatchNorm2d) and model[0].bias is None
    assert not net.training and net[0].bias is not None
