"""What each block of the network computes for a photo: its output feature maps, as tensors."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

import torch
from torch import nn

from monkeysee.models.hooks import Capture, forward_hook, resolve_layer


def stage_layers(model: nn.Module) -> list[str]:
    """The default layers: every body stage of a monkeysee Classifier, input to output."""
    from monkeysee.models.hooks import default_layer

    stage_names = getattr(model, "stage_names", None)
    return list(stage_names()) if callable(stage_names) else [default_layer(model)]


def layer_activations(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str | nn.Module] | None = None
) -> dict[str, torch.Tensor]:
    """{layer name: output} of the chosen layers (default: every body stage) for photos `x`.

    `x` is one photo (3, H, W) or a batch (B, 3, H, W); outputs keep the batch dimension and are detached
    CPU copies. Runs without gradients, in eval mode, hooks removed afterwards; the model is untouched.
    """
    from monkeysee.models.hooks import evaluating

    resolved = list(dict(resolve_layer(model, name) for name in (layers or stage_layers(model))).items())
    if x.dim() == 3:
        x = x[None]
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(param.device)
    captures = {name: Capture(name) for name, _ in resolved}
    with ExitStack() as stack, evaluating(model), torch.no_grad():
        for name, module in resolved:
            stack.enter_context(forward_hook(module, captures[name]))
        model(x)
    return {name: cap.result().cpu().contiguous() for name, cap in captures.items()}
