"""Backbone registry: every entry builds the same way, weights load by position with checks, offline
sources fail clearly, and the bundled Lite0 weights are real ImageNet weights."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from monkeysee.errors import CheckpointError, ConfigError
from monkeysee.models import available_backbones, create_model, get_backbone
from monkeysee.models.forward import forward_pass
from monkeysee.models.hooks import resolve_layer
from monkeysee.models.registry import BACKBONES


def test_registry_lists_offline_and_download_backbones():
    names = available_backbones()
    expected = {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "vgg16", "resnet50"}
    assert expected <= set(names)
    assert get_backbone("efficientnet_lite0").offline
    assert not get_backbone("vgg16").offline


def test_unknown_backbone_error_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        get_backbone("alexnet9000")
    assert "efficientnet_lite0" in err.value.message and "vgg16" in err.value.message


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_builds_and_classifies_at_its_input_size(name):
    """Whatever is registered is built (random weights), run at the size its preprocessing feeds, and
    explained at a layer that exists: a new backbone is tested the moment it is registered."""
    spec = get_backbone(name)
    model = create_model(name, num_classes=3).eval()
    size = spec.preprocess.input_size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    stages = model.stage_names()
    modules = dict(model.named_modules())
    assert len(stages) >= 2 and len(set(stages)) == len(stages)
    assert all(s in modules for s in stages)  # every stage name resolves to a module
    assert spec.explain_layer == stages[-1]  # the default explanation layer is the body's last stage
    layer = resolve_layer(model, spec.explain_layer)
    assert layer == (spec.explain_layer, modules[spec.explain_layer])
    assert 1 <= spec.default_unfreeze <= len(model.body)
    # One pass (batch of one, to stay fast on a shared CPU): logits, pooled features, the explained
    # layer's feature map and the gradient flowing into it.
    p = forward_pass(model, x, layer=layer, gradients=True)
    assert p.logits.shape == (1, 3) and torch.isfinite(p.logits).all()
    assert p.activation is not None and p.activation.shape[:2] == (1, spec.num_features)
    assert min(p.activation.shape[2:]) >= 1
    assert p.features is not None and p.features.shape == (1, spec.num_features)
    assert p.gradients is not None and p.gradients.abs().sum() > 0  # the explained layer feeds the logits


def test_vgg16_has_five_blocks_and_keeps_the_14x14_map():
    model = create_model("vgg16", num_classes=3)
    assert model.stage_names() == [f"body.block{i}" for i in range(1, 6)]
    with torch.no_grad():
        assert model.body(torch.zeros(1, 3, 224, 224)).shape == (1, 512, 14, 14)


def test_freeze_body_leaves_only_top_stages_and_head_trainable():
    model = create_model("resnet18", num_classes=3)
    model.freeze_body(trainable_top_stages=1)
    named = model.named_parameters()
    trainable = {n.split(".")[1] for n, p in named if p.requires_grad and n.startswith("body")}
    assert trainable == {"layer4"}
    assert all(p.requires_grad for p in model.head.parameters())


def test_offline_download_failure_says_how_to_get_the_file(monkeypatch):
    import torchvision.models as tvm

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tvm.VGG16_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(CheckpointError) as err:
        create_model("vgg16", num_classes=3, pretrained=True)
    assert "--weights FILE" in err.value.message and "vgg16" in err.value.message


def test_weights_file_loads_by_position_into_the_body(tmp_path):
    import torchvision.models as tvm
    from safetensors.torch import save_file

    reference = tvm.vgg16(weights=None)
    path = tmp_path / "vgg16.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = create_model("vgg16", num_classes=3, weights=path)
    assert torch.equal(model.body.block1[0].weight, reference.features[0].weight)
    assert torch.equal(model.body.block5[4].bias, reference.features[28].bias)


def test_weights_file_of_the_wrong_backbone_is_refused(tmp_path):
    import torchvision.models as tvm

    path = tmp_path / "resnet18.pth"
    torch.save(tvm.resnet18(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        create_model("vgg16", num_classes=3, weights=path)
    assert str(path) in err.value.message and "shape" in err.value.message


def test_missing_weights_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="weights file not found"):
        create_model("vgg16", num_classes=3, weights=tmp_path / "nope.pth")


def test_bundled_lite0_weights_are_real_imagenet_weights():
    """scikit-image's chelsea photo is a tabby cat: ImageNet classes 281-285 are the domestic cats."""
    import skimage.data
    from PIL import Image

    from monkeysee.data.transforms import eval_transform

    spec = get_backbone("efficientnet_lite0")
    model = create_model(spec.name, pretrained=True).eval()
    x = eval_transform(spec.preprocess)(Image.fromarray(np.asarray(skimage.data.chelsea())))[None]
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    top3 = probs.topk(3).indices.tolist()
    assert top3[0] in range(281, 286)
    assert set(top3) <= set(range(281, 288))
    assert probs[281:286].sum() > 0.8


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_bundled_lite1_lite2_weights_load_and_see_a_cat(name):
    import skimage.data
    from PIL import Image

    from monkeysee.data.transforms import eval_transform

    spec = get_backbone(name)
    model = create_model(name, pretrained=True).eval()
    x = eval_transform(spec.preprocess)(Image.fromarray(np.asarray(skimage.data.chelsea())))[None]
    with torch.no_grad():
        assert model(x).argmax(1).item() in range(281, 286)
