"""The model pass, once: logits, pooled features and, on request, one layer's activation and the gradient
of each photo's target logit with respect to it, all from a single forward pass.

Prediction, batch prediction with heatmaps, the web app, the report and the explanations all call
`forward_pass`; nothing else runs a model forward for an answer. The pass holds `MODEL_LOCK` (via
`evaluating`) while its hooks are on the model, runs in eval mode and leaves the model as it found it.
The gradient is taken with `torch.autograd.grad` with respect to the hooked activation only: no weight
gradients, nothing left in `.grad`, and frozen models need no `requires_grad` changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import nn

from monkeysee.errors import ConfigError, ExplainError
from monkeysee.models.hooks import Capture, evaluating, forward_hook
from monkeysee.runtime import autocast

TargetSpec = int | Sequence[int] | torch.Tensor | None
"""Which class each photo's gradient is taken for: None (the prediction), one index, or one per photo."""

FEATURES_LAYER = "head.pool"
"""Where a monkeysee Classifier's pooled feature vector (the unknown detectors' input) is read."""


@dataclass(frozen=True, eq=False)
class ForwardPass:
    """What one pass saw. Tensors are float32 and detached; absent parts are None.

    `logits` (B, classes); `features` (B, D) pooled features where the model has a `head.pool`;
    `activation` (B, K, h, w) of `layer` and `gradients` d(target logit)/d(activation) of the same shape;
    `targets` (B,) the class explained per photo (the prediction unless asked otherwise).
    """

    logits: torch.Tensor
    targets: torch.Tensor
    features: torch.Tensor | None = None
    layer: str | None = None
    activation: torch.Tensor | None = None
    gradients: torch.Tensor | None = None


def forward_pass(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layer: tuple[str, nn.Module] | None = None,
    targets: TargetSpec = None,
    gradients: bool = False,
    precision: str = "fp32",
) -> ForwardPass:
    """Run `model` on the batch `x` once; see the module docstring. `precision` is resolved already
    ('fp32' or 'bf16', the latter under autocast with float32 weights)."""
    if gradients and layer is None:
        raise ExplainError("gradients need a layer to take them at", fix="pass layer=(name, module)")
    captures: dict[str, Capture] = {}
    pool = _features_module(model)
    with ExitStack() as stack:
        stack.enter_context(evaluating(model))
        if layer is not None:
            captures["layer"] = Capture(layer[0], track_grad=gradients)
            stack.enter_context(forward_hook(layer[1], captures["layer"]))
        if pool is not None:
            captures["features"] = Capture(FEATURES_LAYER)
            stack.enter_context(forward_hook(pool, captures["features"]))
        # no_grad up to the layer; with `gradients` its hook switches grad on from there.
        with torch.no_grad(), autocast(precision, x.device):
            out = model(x)
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            raise ExplainError("the model must return (B, classes) logits",
                               fix="use a classifier, or wrap the model so it returns logits")
        t = target_tensor(targets, out.detach().argmax(dim=1), out.shape[1])
        activation = captures["layer"].result() if layer is not None else None
        grads = _gradient(out, t, activation, layer[0] if layer else "") if gradients else None
    features = captures["features"].result().flatten(1).float() if pool is not None else None
    if activation is not None and activation.dim() != 4:
        raise ExplainError(f"layer {layer[0]!r} outputs shape {tuple(activation.shape)}, not (B, K, h, w)",
                           fix="choose a convolutional layer or block")
    return ForwardPass(
        logits=out.detach().float(),
        targets=t,
        features=features,
        layer=None if layer is None else layer[0],
        activation=None if activation is None else activation.detach().float(),
        gradients=None if grads is None else grads.float(),
    )


def _features_module(model: nn.Module) -> nn.Module | None:
    head = getattr(model, "head", None)
    pool = getattr(head, "pool", None)
    return pool if isinstance(pool, nn.Module) else None


def _gradient(out: torch.Tensor, targets: torch.Tensor, activation: torch.Tensor | None,
              name: str) -> torch.Tensor:
    """d(sum of each photo's target logit)/d(activation): photos do not mix, so row b is photo b's."""
    if activation is None or not out.requires_grad:
        raise ExplainError(f"the output does not depend on layer {name!r}",
                           fix="choose a layer on the path from the photo to the prediction")
    with torch.enable_grad():  # the caller may be under no_grad; the graph exists already
        score = out.float().gather(1, targets[:, None]).sum()
    (grads,) = torch.autograd.grad(score, activation, allow_unused=True)
    if grads is None:
        raise ExplainError(f"the output does not depend on layer {name!r}",
                           fix="choose a layer on the path from the photo to the prediction")
    return grads


def target_tensor(targets: TargetSpec, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One class index per photo: the prediction (None), one index for all, or one index each."""
    if targets is None:
        return predicted
    t = torch.as_tensor(targets, dtype=torch.long, device=predicted.device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(len(predicted)).clone()
    if t.numel() != len(predicted):
        raise ConfigError(
            f"{t.numel()} targets for {len(predicted)} photos",
            fix="give one class index for all photos or one per photo",
        )
    bad = t[(t < 0) | (t >= num_classes)]
    if len(bad):
        raise ConfigError(
            f"target class {int(bad[0])} is out of range",
            fix=f"this model has {num_classes} classes: use 0 to {num_classes - 1}",
        )
    if t.is_inference() and not torch.is_inference_mode_enabled():
        t = t.clone()  # e.g. predictions made under inference_mode: the gradient pass saves this index
    return t
