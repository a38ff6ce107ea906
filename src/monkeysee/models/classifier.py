"""A classifier is a body (a Sequential of named stages ending in a conv feature map) and a head."""

from __future__ import annotations

import torch
from torch import nn


class Head(nn.Module):
    """Global average pool, dropout, linear: the part that transfer learning replaces."""

    def __init__(self, num_features: int, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(num_features, num_classes)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.pool(feature_map).flatten(1)))

    def pooled(self, feature_map: torch.Tensor) -> torch.Tensor:
        """The pooled feature vector (the input of the linear layer), e.g. for feature-space OOD scores."""
        return self.pool(feature_map).flatten(1)


class Classifier(nn.Module):
    """`body` maps photos to the last conv feature map; `head` maps that to species logits.

    The body is an `nn.Sequential` of named stages (conv blocks), so every backbone offers the same
    handles: stage outputs for activation maps, the last stage for Grad-CAM, the top stages to unfreeze.
    """

    def __init__(
        self, body: nn.Sequential, num_features: int, num_classes: int, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.body = body
        self.head = Head(num_features, num_classes, dropout)
        self.num_features = num_features

    @property
    def num_classes(self) -> int:
        return self.head.fc.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def stage_names(self) -> list[str]:
        """Dotted names of the body's stages, input to output (e.g. 'body.stage3')."""
        return [f"body.{name}" for name, _ in self.body.named_children()]

    def freeze_body(self, trainable_top_stages: int = 0) -> None:
        """Freeze the body except its last `trainable_top_stages` stages; the head stays trainable."""
        stages = list(self.body.children())
        cut = len(stages) - trainable_top_stages
        for i, stage in enumerate(stages):
            for p in stage.parameters():
                p.requires_grad_(i >= cut)
        for p in self.head.parameters():
            p.requires_grad_(True)
