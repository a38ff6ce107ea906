"""What a stored activation is keyed by: the photo's content, and everything the computation depends on.

A `StoreKey` names the backbone, the cut, the frozen weights, the transforms, the precision and the
augmentation seed; each of its two tables (clean view 0, augmented views 1..n) lives in a folder named
by a digest of the fields that table depends on.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from monkeysee.data.copies import sha256_file
from monkeysee.errors import ConfigError
from monkeysee.models.fold import FOLD

Transform = Callable[[Image.Image], torch.Tensor]

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
POOLED = "body:"  # how a pooled key's weights fingerprint starts: it is of the whole body
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def content_key(data: bytes) -> str:
    """The key of a photo: the first 128 bits of the sha256 of its bytes, in hex."""
    return hashlib.sha256(data).hexdigest()[:32]


def file_key(path: Path) -> str:
    """`content_key` of a file's bytes, without holding them all."""
    return sha256_file(path)[:32]


def module_fingerprint(module: nn.Module) -> str:
    """Fingerprint of a module's weights and buffers (names, shapes, dtypes and bytes)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def transform_fingerprint(transform: Callable[..., Any]) -> str:
    """Fingerprint of a transform from its repr, which for torchvision transforms lists every parameter.

    A repr with a memory address in it (a lambda, a plain function) would differ on every run and so
    never match; that is refused rather than silently re-encoding everything each time.
    """
    text = repr(transform)
    if _ADDRESS.search(text):
        raise ConfigError(
            f"cannot fingerprint transform {text[:80]!r}: its repr holds a memory address",
            fix="build it from torchvision transforms, or give it a __repr__ that lists its settings",
        )
    return _digest(text)


def _digest(obj: object) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def view_seed(seed: int, content: str, view: int) -> int:
    """The generator seed of augmented `view` of the photo whose content key is `content`."""
    return int(hashlib.sha256(f"{seed}:{content}:{view}".encode()).hexdigest()[:15], 16)


@dataclass(frozen=True)
class StoreKey:
    """Everything a stored activation depends on besides the photo and the view."""

    backbone: str
    cut: int  # index of the first trainable stage: the store holds the output of stages [0, cut)
    weights: str  # module_fingerprint of the frozen stages
    precision: str  # "fp32" or "bf16": the autocast used and the stored dtype
    clean: str  # transform_fingerprint of the eval transform (view 0)
    augment: str  # transform_fingerprint of the training transform (views 1..n); "" when none
    seed: int
    folded: bool = True  # computed with BatchNorm folded into the convolutions (models.fold): its last bits

    def __post_init__(self) -> None:
        if self.precision not in DTYPES:
            raise ConfigError(f"store precision must be fp32 or bf16, not {self.precision!r}",
                              fix="resolve 'auto' with monkeysee.runtime.resolve_precision first")

    @classmethod
    def for_encoding(
        cls,
        backbone: str,
        cut: int,
        lower: nn.Module,
        clean: Transform,
        augmented: Transform | None,
        precision: str,
        seed: int,
    ) -> StoreKey:
        """The key of `lower` (the frozen stages [0, cut) of `backbone`) under these transforms."""
        aug = "" if augmented is None else transform_fingerprint(augmented)
        return cls(backbone, int(cut), module_fingerprint(lower), precision,
                   transform_fingerprint(clean), aug, int(seed))

    def pooled(self, body: nn.Module) -> StoreKey:
        """The key of the head's input: the output of all of `body` (its current weights), average-pooled,
        from this key's frozen-layer activations (so the cut stays part of it: it decides where the
        computation is split, and so its last bits)."""
        return replace(self, weights=f"{POOLED}{module_fingerprint(body)}")

    def fields_of(self, view: int) -> dict[str, Any]:
        """The fields the table holding `view` depends on: the clean view 0 depends on neither the
        augmentation nor its seed, so every augmentation recipe shares it."""
        fields = asdict(self) | ({"folded": FOLD} if self.folded else {})
        if view == 0:
            return {k: v for k, v in fields.items() if k not in {"augment", "seed"}}
        return fields

    def folder(self, view: int) -> str:
        """Folder name of the table holding `view`: clean (0) or augmented (1..n)."""
        return f"{'clean' if view == 0 else 'aug'}-{_digest(self.fields_of(view))}"

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32
