"""A collection: the species that live in one zoo or enclosure, a subset of the species a run knows.

A collection file holds one species per line, by folder label, common name or Latin name (any case,
spaces or underscores); blank lines and lines starting with '#' are skipped. A name the run does not
know is an error naming its line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monkeysee.data.species import Species
from monkeysee.errors import ConfigError, DataError


def collection_mask(names: Sequence[str], species: Sequence[Species],
                    where: str = "collection") -> np.ndarray:
    """(classes,) True for the species `names` lists; a name no species answers to is a ConfigError."""
    mask = np.zeros(len(species), dtype=bool)
    for i, name in enumerate(names):
        hits = [j for j, s in enumerate(species) if s.matches(name)]
        if not hits:
            known = ", ".join(s.display_name for s in species)
            raise ConfigError(f"{where} item {i + 1} {name.strip()!r} is not a species of this model",
                              fix=f"use a label, common or Latin name of: {known}")
        mask[hits] = True
    if not names:
        raise ConfigError(f"{where} lists no species", fix="list at least one species, one per line")
    return mask


def read_collection(path: str | Path, species: Sequence[Species]) -> np.ndarray:
    """The mask of the species a collection file lists (see the module doc)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DataError("collection file not found", fix="check the path given to --collection",
                        path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the collection file ({exc})", fix="save it as UTF-8 text, one species "
                        "per line", path=path) from None
    mask = np.zeros(len(species), dtype=bool)
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        hits = [j for j, s in enumerate(species) if s.matches(name)]
        if not hits:
            raise DataError(f"line {number} names {name!r}, not a species of this model",
                            fix="use a label, common or Latin name of: "
                                + ", ".join(s.display_name for s in species), path=path)
        mask[hits] = True
    if not mask.any():
        raise DataError("the collection file lists no species", fix="write one species per line", path=path)
    return mask


def restricted(probs: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Probabilities given that the photo shows a species of the collection: the others set to zero and
    the rest renormalised to sum to one."""
    if mask is None:
        return probs
    out = np.where(mask[None, :], probs, 0.0)
    total = out.sum(axis=1, keepdims=True)
    return np.divide(out, total, out=np.full_like(out, 0.0), where=total > 0)
