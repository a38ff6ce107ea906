"""Which class a map explains: an index, or a species named the way people name it."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from monkeysee.data.species import Species
from monkeysee.errors import ConfigError

TargetSpec = int | Sequence[int] | torch.Tensor | None


def resolve_species(query: str | int, species: Sequence[Species]) -> int:
    """Index of the species meant by `query`: an index, a label, a common or a Latin name (any case)."""
    if isinstance(query, int) or (isinstance(query, str) and query.strip().isdigit()):
        index = int(query)
        if 0 <= index < len(species):
            return index
        raise ConfigError(
            f"species index {index} is out of range",
            fix=f"use 0 to {len(species) - 1}, or a name: {_listing(species)}",
        )
    for i, s in enumerate(species):
        if s.matches(query):
            return i
    raise ConfigError(f"unknown species {query!r}", fix=f"choose one of: {_listing(species)}")


def _listing(species: Sequence[Species]) -> str:
    parts = []
    for i, s in enumerate(species):
        latin = f", {s.display_latin}" if s.latin_name else ""
        parts.append(f"{i} = {s.label} ({s.display_name}{latin})")
    return "; ".join(parts)


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
