"""The log's tables as SQLAlchemy 2 ORM classes. The migrations in `migrations/versions` create them;
`schema` is what the code reads and writes, and a test checks that both agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

STATUSES = ("unreviewed", "confirmed", "corrected")
ROLES = ("keeper", "reviewer")
VERDICTS = ("species", "retake", "unknown", "error")


class UTCDateTime(TypeDecorator[datetime]):
    """Times are stored as UTC and read back as aware UTC datetimes on every database (SQLite keeps no
    zone), so exports are the same text whichever database wrote them."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one (e.g. datetime.now(UTC))")
        value = value.astimezone(UTC).replace(microsecond=0)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Keeper(Base):
    """A person who records sightings; a reviewer may also confirm and correct them. Only the sha256 of
    the token is kept, so a stolen database gives no one a usable token."""

    __tablename__ = "keepers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Place(Base):
    """An enclosure or site from the configured list; coordinates are optional (exports that need them
    take the site's)."""

    __tablename__ = "places"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    latitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    longitude: Mapped[float | None] = mapped_column(Float, nullable=True)


class Photo(Base):
    """A photo, stored once by its content hash; `location` is its path inside the photo folder."""

    __tablename__ = "photos"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    location: Mapped[str] = mapped_column(String(300))
    media_type: Mapped[str] = mapped_column(String(40))
    size_bytes: Mapped[int] = mapped_column(Integer)


class Sighting(Base):
    """One animal seen: when, where, by whom, the model's answer and the people's verdict. The model's
    columns (`run` ... `verdict`) and the people's (`species`, `status`, `reviewed_*`) are separate, so
    answering again with a model never touches a label a person gave."""

    __tablename__ = "sightings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    place_id: Mapped[int | None] = mapped_column(ForeignKey("places.id"), nullable=True, index=True)
    place_text: Mapped[str | None] = mapped_column(String(200), nullable=True)
    keeper_id: Mapped[int | None] = mapped_column(ForeignKey("keepers.id"), nullable=True)
    run: Mapped[str | None] = mapped_column(String(300), nullable=True)
    rank: Mapped[str | None] = mapped_column(String(32), nullable=True)
    taxon: Mapped[str | None] = mapped_column(String(200), nullable=True)
    species_hint: Mapped[str | None] = mapped_column(String(200), nullable=True)
    probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    verdict: Mapped[str] = mapped_column(String(16))
    species: Mapped[str | None] = mapped_column(String(120), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("keepers.id"), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    notes: Mapped[str] = mapped_column(Text)

    place: Mapped[Place | None] = relationship(lazy="joined")
    keeper: Mapped[Keeper | None] = relationship(foreign_keys=[keeper_id], lazy="joined")
    reviewer: Mapped[Keeper | None] = relationship(foreign_keys=[reviewed_by], lazy="joined")
    photos: Mapped[list[SightingPhoto]] = relationship(order_by="SightingPhoto.position", lazy="selectin",
                                                       cascade="all, delete-orphan")


class SightingPhoto(Base):
    """A photo of a sighting, with the model's answer for that photo alone (the sighting's answer fuses
    them)."""

    __tablename__ = "sighting_photos"
    __table_args__ = (UniqueConstraint("sighting_id", "photo_id"),)
    sighting_id: Mapped[int] = mapped_column(ForeignKey("sightings.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id"), index=True)
    species_hint: Mapped[str | None] = mapped_column(String(200), nullable=True)
    probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    verdict: Mapped[str | None] = mapped_column(String(16), nullable=True)
    weight: Mapped[float | None] = mapped_column(Float, nullable=True)

    photo: Mapped[Photo] = relationship(lazy="joined")


class Event(Base):
    """One change to a sighting: who (null for a model run without a keeper), when, what, and the
    values before and after."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sighting_id: Mapped[int] = mapped_column(ForeignKey("sightings.id", ondelete="CASCADE"), index=True)
    keeper_id: Mapped[int | None] = mapped_column(ForeignKey("keepers.id"), nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    action: Mapped[str] = mapped_column(String(32))
    changes: Mapped[dict[str, Any]] = mapped_column(JSON)

    keeper: Mapped[Keeper | None] = relationship(lazy="joined")
