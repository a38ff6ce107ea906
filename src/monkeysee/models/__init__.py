"""Backbones and the classifier built on them."""

from monkeysee.models.classifier import Classifier, Head
from monkeysee.models.registry import (
    BackboneSpec,
    Preprocess,
    available_backbones,
    create_model,
    get_backbone,
    register_backbone,
)

# Importing the module registers its backbones.
from monkeysee.models import backbones as _backbones  # noqa: F401  # isort: skip

__all__ = [
    "BackboneSpec",
    "Classifier",
    "Head",
    "Preprocess",
    "available_backbones",
    "create_model",
    "get_backbone",
    "register_backbone",
]
