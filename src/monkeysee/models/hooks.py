"""Finding a layer by name and looking inside a model without changing it.

Everything that touches a caller's model goes through two context managers here: `evaluating`
(eval mode for the duration, each module's own flag restored afterwards) and `forward_hook`
(a hook that is removed in `finally`, also when the forward pass raises).
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from monkeysee.errors import ConfigError, ExplainError

LayerRef = str | nn.Module


def default_layer(model: nn.Module) -> str:
    """The last body stage of a monkeysee Classifier (the registry's default, e.g. 'body.head')."""
    stage_names = getattr(model, "stage_names", None)
    if callable(stage_names) and stage_names():
        return stage_names()[-1]
    raise ConfigError(
        f"{type(model).__name__} has no body stages to choose a default layer from",
        fix="name the layer to explain, e.g. layer='features.28' (any name from model.named_modules())",
    )


def resolve_layer(model: nn.Module, layer: LayerRef | None) -> tuple[str, nn.Module]:
    """(dotted name, module) for a dotted name, a module of `model`, or None for the default layer."""
    if layer is None:
        layer = default_layer(model)
    modules = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, module in modules.items():
            if module is layer:
                return name, module
        raise ConfigError("the layer module given is not part of this model", fix="pass one of its modules")
    if layer in modules and layer:
        return layer, modules[layer]
    raise ConfigError(f"unknown layer {layer!r}", fix=_layer_hint(model, layer, list(modules)))


def _layer_hint(model: nn.Module, layer: str, names: list[str]) -> str:
    stage_names = getattr(model, "stage_names", None)
    stages = stage_names() if callable(stage_names) else []
    close = [n for n in difflib.get_close_matches(layer, names, n=5, cutoff=0.6) if n not in stages]
    hint = f"choose one of the stages: {', '.join(stages)}" if stages else "choose a module name"
    if close:
        hint += f"; close matches: {', '.join(close)}"
    return hint + " (any dotted name from model.named_modules() works)"


MODEL_LOCK = threading.RLock()
"""Held by every pass through a shared model (`evaluating`): modes and hooks belong to the model, so two
threads must never see each other's. One lock for the whole process; the passes use every core anyway."""


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode for the block, then give each back its own training flag.

    Explanations are of the deployed model: dropout off and BatchNorm on its running statistics, so a
    photo's map does not depend on chance or on its batch-mates, and no running statistic is updated.
    Blocks run one at a time across threads (a web server may explain from several), since modes and
    hooks belong to the shared model.
    """
    with MODEL_LOCK:
        flags = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            yield model
        finally:
            for module, training in flags:
                module.training = training


Hook = Callable[[nn.Module, Any, Any], Any]


@contextmanager
def forward_hook(module: nn.Module, hook: Hook) -> Iterator[None]:
    """Register `hook` on `module` for the block only; removed in `finally`."""
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class Capture:
    """A forward hook that keeps the layer's output, optionally as the start of a fresh autograd graph.

    With `track_grad`, the output is swapped for a leaf tensor that requires grad and grad mode is
    switched on for the rest of the forward pass (the caller runs the forward under `no_grad`, which
    restores the caller's grad mode when it exits). So the graph covers only the layers after this one:
    no weight gradients, nothing recorded upstream, and frozen models are explainable as they are.
    Forward passes run by other threads (say, predictions in a web server) pass through untouched.
    """

    def __init__(self, name: str, track_grad: bool = False, replace: torch.Tensor | None = None) -> None:
        self.name = name
        self.track_grad = track_grad
        self.replace = replace
        self.activation: torch.Tensor | None = None
        self.thread = threading.get_ident()

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> torch.Tensor | None:
        if threading.get_ident() != self.thread:
            return None
        if not isinstance(output, torch.Tensor):
            raise ExplainError(
                f"layer {self.name!r} returns {type(output).__name__}, not a tensor",
                fix="choose a layer that outputs a feature map (e.g. a conv block)",
            )
        if self.activation is not None:
            raise ExplainError(
                f"layer {self.name!r} runs more than once in a forward pass",
                fix="choose a layer that the model calls once (not a shared module)",
            )
        if self.replace is not None:
            if self.replace.shape[1:] != output.shape[1:]:
                raise ExplainError(f"layer {self.name!r} changed shape between passes")
            self.activation = self.replace
            return self.replace
        if not self.track_grad:
            # A copy: a later in-place op (e.g. ReLU(inplace=True)) must not change what we keep.
            self.activation = output.detach().clone()
            return None
        torch.set_grad_enabled(True)
        leaf = output.detach().requires_grad_(True)
        self.activation = leaf
        return leaf.clone()  # later in-place ops act on the copy, not on the leaf

    def result(self) -> torch.Tensor:
        if self.activation is None:
            raise ExplainError(
                f"layer {self.name!r} did not run during the forward pass",
                fix="choose a layer on the path from the photo to the prediction",
            )
        return self.activation
