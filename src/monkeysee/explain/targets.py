"""Which class a map explains: an index, or a species named the way people name it."""

from __future__ import annotations

from collections.abc import Sequence

from monkeysee.data.species import Species
from monkeysee.errors import ConfigError
from monkeysee.models.forward import TargetSpec, target_tensor

__all__ = ["TargetSpec", "resolve_species", "target_tensor"]



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
