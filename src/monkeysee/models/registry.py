"""Backbone registry: name -> how to build it, where its pretrained weights come from, how to feed it.

Adding a backbone is one `@register_backbone` function in `backbones.py`; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from monkeysee.data.preprocess import Preprocess
from monkeysee.models.classifier import Classifier
from monkeysee.registry import Registry

WeightsLoader = Callable[[Classifier, "Path | None"], None]


@dataclass(frozen=True)
class BackboneSpec:
    """Everything the rest of monkeysee needs to know about one backbone."""

    name: str
    build_body: Callable[[], nn.Sequential]
    num_features: int
    preprocess: Preprocess
    load_weights: WeightsLoader
    weights_source: str
    explain_layer: str
    default_unfreeze: int = 2
    offline: bool = False


BACKBONES: Registry[BackboneSpec] = Registry("backbone")


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone; adding one is one `BackboneSpec` in `backbones.py`, nothing else changes."""
    return BACKBONES.add(spec.name, spec)


def available_backbones() -> list[str]:
    return sorted(BACKBONES)


def get_backbone(name: str) -> BackboneSpec:
    return BACKBONES.get(name)


def create_model(
    name: str,
    num_classes: int = 1000,
    pretrained: bool = False,
    weights: str | Path | None = None,
    dropout: float = 0.2,
) -> Classifier:
    """Build a classifier on a registered backbone.

    With `pretrained` (or a `weights` file) the body gets ImageNet weights; the head keeps them too
    when `num_classes` is 1000 and the source has a compatible head, otherwise it starts fresh.
    """
    spec = get_backbone(name)
    model = Classifier(spec.build_body(), spec.num_features, num_classes, dropout)
    if pretrained or weights is not None:
        spec.load_weights(model, None if weights is None else Path(weights))
    return model


def load_by_position(
    model: Classifier,
    source: dict[str, torch.Tensor],
    *,
    with_head: bool,
    origin: str,
    reference_keys: list[str] | None = None,
) -> None:
    """Copy `source` tensors into `model` in order, checking every shape.

    Pretrained files name their tensors after their own module tree; ours is a Sequential of stages
    holding the same modules in the same order, so order plus shape is the reliable mapping. Files
    that do not keep order (safetensors sorts names) are put back in the order of `reference_keys`,
    the key order of the module tree the file was written from.
    """
    from monkeysee.errors import CheckpointError

    source = {k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}
    if reference_keys is not None and set(source) == {
        k for k in reference_keys if not k.endswith("num_batches_tracked")
    }:
        source = {k: source[k] for k in reference_keys if k in source}
    state = model.state_dict()
    targets = [k for k in state if k.startswith("body.") and not k.endswith("num_batches_tracked")]
    if with_head and model.num_classes == _last_out_features(source):
        targets += ["head.fc.weight", "head.fc.bias"]
    values = list(source.values())[: len(targets)]
    if len(values) != len(targets):
        raise CheckpointError(
            f"weights hold {len(source)} tensors, the model needs {len(targets)}",
            fix="pass the ImageNet weights file of this backbone",
            path=origin,
        )
    new_state = {}
    for key, value in zip(targets, values, strict=True):
        expected = state[key].shape
        if value.shape != expected:
            raise CheckpointError(
                f"tensor for {key} has shape {tuple(value.shape)}, expected {tuple(expected)}",
                fix="pass the ImageNet weights file of this backbone",
                path=origin,
            )
        new_state[key] = value
    model.load_state_dict(new_state, strict=False)


def _last_out_features(source: dict[str, torch.Tensor]) -> int:
    last = list(source.values())[-1]
    return int(last.shape[0]) if last.ndim == 1 else -1
