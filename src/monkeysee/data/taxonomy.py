"""The ranks above species: each species' genus, family and any coarser rank a taxonomy file gives.

Two sources. A labels file with Latin binomials gives each species its genus (the binomial's first word)
and, for primates, its family from the table in `data/primates.py`. Any other set of species takes a CSV
(`--taxonomy FILE`) whose header starts with `species` and then names ranks from fine to coarse, for
example `species,genus,family` or `species,family,superfamily`; the `species` column matches a class
folder's label, common name or Latin name. Rows for species not in the data are ignored.

The ranks form a tree: a taxon has one parent at the next rank, so probabilities can be summed up it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monkeysee.data.primates import PRIMATE_FAMILY
from monkeysee.data.species import Species
from monkeysee.errors import DataError

LATIN_SOURCE = "Latin names of the labels file; primate families built in"
_CSV_FIX = "write a header 'species,RANK,...' (ranks from fine to coarse), then one row per species"


@dataclass(frozen=True)
class Taxonomy:
    """`ranks` from fine to coarse (species itself excluded); `lineage[label]` the taxon at each rank."""

    ranks: tuple[str, ...]
    lineage: dict[str, tuple[str, ...]]
    source: str

    def __post_init__(self) -> None:
        for label, names in self.lineage.items():
            if len(names) != len(self.ranks):
                raise ValueError(f"species {label!r} has {len(names)} taxa for {len(self.ranks)} ranks")
        parents: dict[tuple[int, str], str] = {}
        for label, names in self.lineage.items():
            for depth in range(len(self.ranks) - 1):
                child, parent = names[depth], names[depth + 1]
                seen = parents.setdefault((depth, child), parent)
                if seen != parent:
                    raise DataError(
                        f"{self.ranks[depth]} {child!r} lies in {self.ranks[depth + 1]} {seen!r} and, "
                        f"through species {label!r}, in {parent!r}",
                        fix=f"give every {self.ranks[depth]} one {self.ranks[depth + 1]}",
                        path=self.source,
                    )

    def taxon(self, label: str, rank: str) -> str:
        """The name of the taxon at `rank` that holds species `label`."""
        return self.lineage[label][self.ranks.index(rank)]

    def members(self, rank: str) -> dict[str, tuple[str, ...]]:
        """Every taxon at `rank` with the labels of its species, in the order the lineage lists them."""
        depth = self.ranks.index(rank)
        groups: dict[str, list[str]] = {}
        for label, names in self.lineage.items():
            groups.setdefault(names[depth], []).append(label)
        return {name: tuple(labels) for name, labels in groups.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"ranks": list(self.ranks), "lineage": {k: list(v) for k, v in self.lineage.items()},
                "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Taxonomy:
        return cls(ranks=tuple(d["ranks"]), lineage={k: tuple(v) for k, v in d["lineage"].items()},
                   source=str(d["source"]))


def from_latin_names(species: Sequence[Species]) -> Taxonomy | None:
    """Genus from each binomial, family from the built-in primate table; None without Latin names.

    When a genus is not a primate genus the taxonomy stops at genus (pass `--taxonomy` for more).
    """
    genera = {s.label: s.display_latin.split(" ")[0] for s in species}
    if not species or not all(genera.values()):
        return None
    if all(g in PRIMATE_FAMILY for g in genera.values()):
        return Taxonomy(("genus", "family"), {k: (g, PRIMATE_FAMILY[g]) for k, g in genera.items()},
                        LATIN_SOURCE)
    return Taxonomy(("genus",), {k: (g,) for k, g in genera.items()}, "Latin names of the labels file")


def read_taxonomy_csv(path: str | Path, species: Sequence[Species]) -> Taxonomy:
    """The taxonomy of `species` from a CSV file; a species the file does not name is an error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError("taxonomy file not found", fix="check the path given to --taxonomy",
                        path=path) from None
    except IsADirectoryError:
        raise DataError("taxonomy file is a folder", fix="pass the .csv file", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the taxonomy file ({exc})", fix="save it as UTF-8 text",
                        path=path) from None
    rows = [row for row in csv.reader(text.splitlines()) if any(cell.strip() for cell in row)]
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if len(header) < 2 or header[0] != "species" or len(set(header)) != len(header) or not all(header):
        raise DataError(f"header {rows[0] if rows else []!r} is not 'species' then rank names",
                        fix=_CSV_FIX, path=path)
    by_name: dict[str, tuple[str, ...]] = {}
    for number, row in enumerate(rows[1:], start=2):
        cells = [c.strip() for c in row]
        if len(cells) != len(header) or not all(cells):
            filled = sum(map(bool, cells))
            raise DataError(f"line {number} has {filled} filled cells, the header {len(header)}",
                            fix="fill every rank of every row", path=path)
        by_name[_norm(cells[0])] = tuple(cells[1:])
    lineage: dict[str, tuple[str, ...]] = {}
    for s in species:
        names = [n for n in (s.label, s.common_name, s.latin_name, s.display_name) if _norm(n) in by_name]
        if not names:
            raise DataError(f"species {s.label!r} ({s.display_name}) is not in the taxonomy file",
                            fix=f"add a row for it; the species column matches the folder name {s.label!r}",
                            path=path)
        lineage[s.label] = by_name[_norm(names[0])]
    return Taxonomy(tuple(header[1:]), lineage, str(path))


def resolve_taxonomy(species: Sequence[Species], path: str | Path | None = None) -> Taxonomy | None:
    """The taxonomy file's when one is given, else what the Latin names give, else None."""
    return read_taxonomy_csv(path, species) if path is not None else from_latin_names(species)


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())
