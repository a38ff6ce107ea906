"""What goes into the log and what comes out of it: plain frozen dataclasses, free of the database."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol


class Answerable(Protocol):
    """What the log reads from a `monkeysee.predict.Prediction`."""

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ModelAnswer:
    """The model's answer for a sighting or one photo: `rank` and `taxon` come from the answer ladder
    (null when it gave no answer); `species_hint` is the most likely species whatever the rank."""

    run: str | None = None
    rank: str | None = None
    taxon: str | None = None
    species_hint: str | None = None
    probability: float | None = None
    verdict: str = "species"

    @classmethod
    def from_prediction(cls, prediction: Answerable, run: str | None) -> ModelAnswer:
        d = prediction.to_dict()
        if "error" in d:
            return cls(run=run, verdict="error")
        hint = d.get("latin_name") or d.get("species")
        rank = d.get("rank", "species" if d.get("verdict") == "species" else None)
        taxon = d.get("taxon", hint if rank == "species" else None)
        return cls(run=run, rank=rank, taxon=taxon, species_hint=hint, probability=d.get("probability"),
                   verdict=str(d.get("verdict", "species")))


@dataclass(frozen=True)
class PhotoIn:
    """A photo to save, with the model's answer for it alone and its weight in the fused answer."""

    data: bytes
    name: str = "photo"
    answer: ModelAnswer | None = None
    weight: float | None = None


@dataclass(frozen=True)
class NewSighting:
    """A sighting to save. `place` names a configured place; `place_text` is free text for anywhere
    else. A save repeated with the same `key` (e.g. a retry after a lost reply) returns the first."""

    photos: Sequence[PhotoIn]
    observed_at: datetime
    place: str | None = None
    place_text: str | None = None
    answer: ModelAnswer = field(default_factory=ModelAnswer)
    notes: str = ""
    key: str | None = None


@dataclass(frozen=True)
class KeeperView:
    id: int
    name: str
    role: str

    @property
    def reviewer(self) -> bool:
        return self.role == "reviewer"


@dataclass(frozen=True)
class PlaceView:
    name: str
    latitude: float | None = None
    longitude: float | None = None


@dataclass(frozen=True)
class PhotoView:
    sha256: str
    location: str
    media_type: str
    species_hint: str | None
    probability: float | None
    verdict: str | None
    weight: float | None


@dataclass(frozen=True)
class SightingView:
    id: int
    key: str
    observed_at: datetime
    recorded_at: datetime
    place: str | None
    place_text: str | None
    recorded_by: str | None
    run: str | None
    rank: str | None
    taxon: str | None
    species_hint: str | None
    probability: float | None
    verdict: str
    species: str | None
    status: str
    reviewed_by: str | None
    reviewed_at: datetime | None
    notes: str
    photos: tuple[PhotoView, ...]

    @property
    def name(self) -> str | None:
        """What the animal is taken to be: the people's species, else the model's answer at its rank."""
        return self.species if self.status != "unreviewed" else self.taxon

    @property
    def where(self) -> str:
        return self.place or self.place_text or ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("observed_at", "recorded_at", "reviewed_at"):
            d[k] = None if d[k] is None else d[k].isoformat()
        d["name"] = self.name
        return d


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    who: str | None
    action: str
    changes: dict[str, Any]


@dataclass(frozen=True)
class Filter:
    """Which sightings to list; `species` matches what the animal is taken to be (`SightingView.name`)."""

    species: str | None = None
    place: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True)
class SpeciesOverview:
    name: str
    sightings: int
    last_seen: datetime
    per_place: dict[str, int]
    per_week: dict[str, int]  # ISO week ("2026-W18") -> sightings
