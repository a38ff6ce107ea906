"""A species the classifier knows: its folder label plus the names people use."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Species:
    """`label` is the class folder name (e.g. 'n0'); names come from the labels file when there is one."""

    label: str
    common_name: str
    latin_name: str = ""

    @property
    def display_name(self) -> str:
        """Human form of the common name: 'mantled_howler' -> 'mantled howler'."""
        return self.common_name.replace("_", " ").strip()

    @property
    def display_latin(self) -> str:
        """'alouatta_palliata' -> 'Alouatta palliata' (binomial capitalisation)."""
        words = self.latin_name.replace("_", " ").split()
        return " ".join([words[0].capitalize(), *[w.lower() for w in words[1:]]]) if words else ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Species:
        return cls(
            label=str(d["label"]), common_name=str(d["common_name"]), latin_name=str(d.get("latin_name", ""))
        )

    def matches(self, query: str) -> bool:
        """Whether a query (label, common or Latin name; any case, spaces or underscores) means this."""
        norm = query.strip().lower().replace("_", " ")
        names = {self.label, self.common_name, self.latin_name, self.display_name, self.display_latin}
        return norm in {n.lower().replace("_", " ") for n in names if n}
