"""Class weights for the training loss on long-tailed species lists.

Each rule maps the training photo count per species to a loss weight per species, normalised so that
the weighted mean over the training photos is 1 (the loss keeps its scale, so learning rates carry
over). "none" is plain cross-entropy; "inverse_sqrt" gives a species with a quarter of the photos twice
the weight per photo; "inverse" makes every species count alike in the loss, however few its photos.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from monkeysee.registry import Registry

WeightRule = Callable[[torch.Tensor], torch.Tensor]
CLASS_WEIGHTS: Registry[WeightRule] = Registry("class weighting")


@CLASS_WEIGHTS.register("none")
def _none(counts: torch.Tensor) -> torch.Tensor:
    return torch.ones(len(counts))


@CLASS_WEIGHTS.register("inverse_sqrt")
def _inverse_sqrt(counts: torch.Tensor) -> torch.Tensor:
    return counts.clamp_min(1).rsqrt()


@CLASS_WEIGHTS.register("inverse")
def _inverse(counts: torch.Tensor) -> torch.Tensor:
    return counts.clamp_min(1).reciprocal()


def class_weights(rule: str, targets: torch.Tensor, classes: int) -> torch.Tensor | None:
    """Per-species loss weights (classes,) from the training targets, or None for "none"."""
    weigh = CLASS_WEIGHTS.get(rule)
    if rule == "none":
        return None
    counts = torch.bincount(targets, minlength=classes).double()
    w = weigh(counts)
    return (w * counts.sum() / (w * counts).sum()).float()
