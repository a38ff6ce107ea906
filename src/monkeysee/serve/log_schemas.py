"""What the keeper's log API sends and receives, as pydantic models (documented in the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoggedPhoto(_Model):
    """One photo of a sighting, with the model's answer for that photo alone."""

    sha256: str = Field(description="the photo's content hash (it is stored once under it)")
    media_type: str
    url: str = Field(description="where to fetch the photo (with the same Authorization header)")
    species_hint: str | None
    probability: float | None
    verdict: str | None
    weight: float | None = Field(description="its weight in the sighting's answer; null when unweighted")


class Sighting(_Model):
    """One animal seen: its photos, when and where, who recorded it, the model's answer and the review."""

    id: int
    key: str = Field(description="the save's key: a save repeated with the same key returns this sighting")
    observed_at: datetime
    recorded_at: datetime
    place: str | None = Field(description="a place from the list, or null")
    place_text: str | None = Field(description="a place written as text, or null")
    recorded_by: str | None = Field(description="the keeper's name; null for the local keeper (no token)")
    run: str | None
    rank: str | None = Field(description="rank of the model's answer (species, genus, ...); null: none")
    taxon: str | None = Field(description="the model's answer at its rank")
    species_hint: str | None = Field(description="the model's most likely species, whatever the rank")
    probability: float | None
    verdict: str = Field(description="'species', 'unknown' (not one of my species), 'retake' or 'error'")
    species: str | None = Field(description="the species a reviewer confirmed or named")
    status: str = Field(description="'unreviewed', 'confirmed' or 'corrected'")
    reviewed_by: str | None
    reviewed_at: datetime | None
    notes: str
    name: str | None = Field(description="what the animal is taken to be: the reviewed species, else the "
                                         "model's answer")
    photos: list[LoggedPhoto]


class SightingList(_Model):
    sightings: list[Sighting]


class ReviewItem(_Model):
    """A sighting waiting for a reviewer, with how much it needs one and why."""

    sighting: Sighting
    need: float = Field(description="higher first: 'not one of my species' and unreadable photos, then "
                                    "'take another photo', then photos that disagree, then low probability")
    reasons: list[str]


class ReviewQueue(_Model):
    queue: list[ReviewItem]


class HistoryEntry(_Model):
    at: datetime
    who: str | None = Field(description="who made the change; null for the local keeper or a model")
    action: str = Field(description="'recorded', 'confirmed', 'corrected', 'notes' or 'model answer'")
    changes: dict[str, Any] = Field(description="{field: [before, after]}")


class History(_Model):
    id: int
    history: list[HistoryEntry]


class SpeciesSeen(_Model):
    name: str
    sightings: int
    last_seen: datetime
    per_place: dict[str, int] = Field(description="place ('' when none was given) -> sightings")
    per_week: dict[str, int] = Field(description="ISO week, e.g. '2026-W18' -> sightings")


class Overview(_Model):
    species: list[SpeciesSeen]


class Place(_Model):
    name: str
    latitude: float | None
    longitude: float | None


class Places(_Model):
    places: list[Place]


class Names(_Model):
    """Species names a reviewer may pick: the run's species, then names already in the log."""

    names: list[str]


class Caller(_Model):
    """Who the server takes the caller to be."""

    name: str | None = Field(description="the keeper's name; null for the local keeper")
    role: str = Field(description="'keeper' or 'reviewer'")
    local: bool = Field(description="true for loopback use without a keeper's token")


class Correction(_Model):
    species: str = Field(min_length=1, max_length=120,
                         description="the species' name: one of the run's, or a new one")
