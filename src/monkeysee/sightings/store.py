"""The sightings store: the one object that reads and writes the keeper's log (see the package doc)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, case, func, or_, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from monkeysee.sightings import database, validate
from monkeysee.sightings.errors import AccessError, InputError, NotFound
from monkeysee.sightings.photos import PhotoFolder, describe
from monkeysee.sightings.records import (
    Filter,
    HistoryEntry,
    KeeperView,
    ModelAnswer,
    NewSighting,
    PhotoIn,
    PhotoView,
    PlaceView,
    SightingView,
    SpeciesOverview,
)
from monkeysee.sightings.schema import Event, Keeper, Photo, Place, Sighting, SightingPhoto

MAX_PHOTOS = 3
ENV_PHOTOS = "MONKEYSEE_PHOTOS"
Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def default_photo_folder(url: str) -> Path:
    """Beside a SQLite file (`log.db` -> `log.db-photos/`), else MONKEYSEE_PHOTOS."""
    import os

    db_file = database.sqlite_path(url)
    if db_file is not None:
        return db_file.with_name(db_file.name + "-photos")
    if os.environ.get(ENV_PHOTOS):
        return Path(os.environ[ENV_PHOTOS])
    raise InputError("a database server keeps no photos: the log needs a folder for them",
                     fix=f"pass --photos DIR or set {ENV_PHOTOS}")


class Store:
    """The keeper's log on one database and one photo folder. Safe to share between threads."""

    def __init__(self, engine: Engine, photos: PhotoFolder, clock: Clock = _now) -> None:
        self.engine = engine
        self.photos = photos
        self.clock = clock
        self._session = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, db: str | Path | None = None, photos: str | Path | None = None, default: Path | None = None,
             clock: Clock = _now) -> Store:
        """Open (and create or upgrade to the newest schema) the log at `db`: a SQLite file or a database
        URL, else MONKEYSEE_DB, else `default`."""
        url = database.resolve_url(db, default)
        engine = database.create(url)
        database.migrate(engine)
        return cls(engine, PhotoFolder(photos or default_photo_folder(url)), clock)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        """One transaction; a database that cannot be reached or written becomes `StoreUnavailable`."""
        try:
            with self._session.begin() as session:
                yield session
        except IntegrityError:
            raise
        except DBAPIError as e:
            raise database.unavailable(str(self.engine.url), e) from None

    # People and places

    def add_keeper(self, name: str, reviewer: bool = False) -> tuple[KeeperView, str]:
        """A new keeper and their token, which is shown this once: only its hash is kept."""
        name = validate.keeper(name)
        token = secrets.token_urlsafe(32)
        try:
            with self._tx() as s:
                k = Keeper(name=name, role="reviewer" if reviewer else "keeper",
                           token_sha256=token_hash(token), created_at=self.clock())
                s.add(k)
                s.flush()
                return KeeperView(k.id, k.name, k.role), token
        except IntegrityError:
            raise InputError(f"a keeper named {name!r} exists already", fix="choose another name") from None

    def keeper(self, token: str) -> KeeperView:
        """The keeper a token belongs to."""
        with self._tx() as s:
            k = s.scalar(select(Keeper).where(Keeper.token_sha256 == token_hash(str(token))))
        if k is None:
            raise AccessError("this token belongs to no keeper", fix="use the token printed by "
                              "`monkeysee log keeper add`")
        return KeeperView(k.id, k.name, k.role)

    def keepers(self) -> list[KeeperView]:
        with self._tx() as s:
            return [KeeperView(k.id, k.name, k.role) for k in s.scalars(select(Keeper).order_by(Keeper.id))]

    def add_places(self, places: Iterable[PlaceView]) -> None:
        """Add places to the configured list (a name already there keeps its coordinates)."""
        with self._tx() as s:
            known = set(s.scalars(select(Place.name)))
            for p in places:
                name = validate.place(p.name)
                if name not in known:
                    s.add(Place(name=name, latitude=p.latitude, longitude=p.longitude))
                    known.add(name)

    def places(self) -> list[PlaceView]:
        with self._tx() as s:
            rows = s.scalars(select(Place).order_by(Place.id))
            return [PlaceView(p.name, p.latitude, p.longitude) for p in rows]

    # Saving

    def save(self, new: NewSighting, by: KeeperView | None = None) -> SightingView:
        """Save a sighting with its photos in one transaction (photos are written to the folder first).
        A photo already stored is linked, not stored again."""
        fields = self._checked(new)
        per_photo = [_photo_answer(p) for p in new.photos]
        described = [(p, describe(p.data, f"photo {i + 1} ({p.name})")) for i, p in enumerate(new.photos)]
        if len({d.sha256 for _, d in described}) < len(described):
            raise InputError("the same photo is given twice", fix="send each photo once")
        for p, d in described:
            self.photos.put(p.data, d)
        key = new.key or uuid.uuid4().hex
        for attempt in range(3):  # two saves adding the same new photo at once: the loser links it
            try:
                with self._tx() as s:
                    existing = s.scalar(select(Sighting).where(Sighting.key == key))
                    if existing is not None:
                        return _view(existing)
                    row = Sighting(key=key, recorded_at=self.clock(), keeper_id=by.id if by else None,
                                   status="unreviewed", **fields, place_id=self._place_id(s, new.place))
                    for pos, (_, d) in enumerate(described):
                        photo = s.scalar(select(Photo).where(Photo.sha256 == d.sha256)) or \
                            Photo(sha256=d.sha256, location=d.location, media_type=d.media_type,
                                  size_bytes=d.size_bytes)
                        row.photos.append(SightingPhoto(position=pos, photo=photo, **per_photo[pos]))
                    s.add(row)
                    s.flush()
                    s.add(Event(sighting_id=row.id, keeper_id=row.keeper_id, at=row.recorded_at,
                                action="recorded", changes={}))
                    s.flush()
                    s.refresh(row)
                    return _view(row)
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _checked(self, new: NewSighting) -> dict[str, Any]:
        if not 1 <= len(new.photos) <= MAX_PHOTOS:
            raise InputError(f"a sighting has 1 to {MAX_PHOTOS} photos, not {len(new.photos)}",
                             fix="send one to three photos of the same animal")
        if new.place is not None and new.place_text is not None:
            raise InputError("give a place from the list or a place as text, not both", fix="drop one")
        if new.key is not None:
            validate.name(new.key, "sighting key", 64)
        return {"observed_at": validate.when(new.observed_at, self.clock()),
                "place_text": validate.optional_text(new.place_text, "place", validate.PLACE_TEXT_MAX),
                "notes": validate.notes(new.notes), **_answer_fields(new.answer)}

    def _place_id(self, s: Session, place: str | None) -> int | None:
        if place is None:
            return None
        found = s.scalar(select(Place.id).where(Place.name == validate.place(place)))
        if found is None:
            raise InputError(f"no place named {place!r} in the list",
                             fix="pick a listed place or write the place as text")
        return found

    def logged(self, sha256s: Iterable[str]) -> set[str]:
        """Which of these photo hashes belong to a sighting already."""
        wanted = list(dict.fromkeys(sha256s))
        found: set[str] = set()
        with self._tx() as s:
            for i in range(0, len(wanted), 500):
                q = select(Photo.sha256).join(SightingPhoto).where(Photo.sha256.in_(wanted[i:i + 500]))
                found.update(s.scalars(q))
        return found

    # Reading

    def get(self, sighting_id: int) -> SightingView:
        with self._tx() as s:
            return _view(self._row(s, sighting_id))

    def _row(self, s: Session, sighting_id: int) -> Sighting:
        row = s.get(Sighting, sighting_id)
        if row is None:
            raise NotFound(f"no sighting number {sighting_id}", fix="list the log for the numbers")
        return row

    def sightings(self, f: Filter | None = None) -> list[SightingView]:
        """Sightings matching `f`, newest first."""
        f = f or Filter()
        q = select(Sighting).outerjoin(Place)
        if f.species is not None:
            reviewed = Sighting.status != "unreviewed"
            q = q.where(or_(and_(reviewed, Sighting.species == f.species),
                            and_(~reviewed, Sighting.taxon == f.species)))
        if f.place is not None:
            q = q.where(or_(Place.name == f.place, Sighting.place_text == f.place))
        if f.status is not None:
            q = q.where(Sighting.status == validate.status(f.status))
        if f.since is not None:
            q = q.where(Sighting.observed_at >= f.since)
        if f.until is not None:
            q = q.where(Sighting.observed_at < f.until)
        q = q.order_by(Sighting.observed_at.desc(), Sighting.id.desc()).limit(f.limit).offset(f.offset)
        with self._tx() as s:
            return [_view(r) for r in s.scalars(q).unique()]

    def all(self) -> Iterator[SightingView]:
        """Every sighting, oldest number first (what exports and backups read)."""
        with self._tx() as s:
            yield from (_view(r) for r in s.scalars(select(Sighting).order_by(Sighting.id)).unique())

    def review_queue(self, limit: int = 50) -> list[tuple[SightingView, float]]:
        """Unreviewed sightings, most in need of a person first: "not one of my species" and unreadable
        photos, then "take another photo", then answers short of species rank, then low probability."""
        need = (case((Sighting.verdict.in_(("unknown", "error")), 3.0), (Sighting.verdict == "retake", 2.0),
                     else_=0.0)
                + case((Sighting.rank.is_(None), 1.0), (Sighting.rank != "species", 0.5), else_=0.0)
                + (1.0 - func.coalesce(Sighting.probability, 0.0)))
        q = (select(Sighting, need.label("need")).where(Sighting.status == "unreviewed")
             .order_by(need.desc(), Sighting.id).limit(limit))
        with self._tx() as s:
            return [(_view(r), round(float(n), 6)) for r, n in s.execute(q).unique()]

    def history(self, sighting_id: int) -> list[HistoryEntry]:
        with self._tx() as s:
            self._row(s, sighting_id)
            q = select(Event).where(Event.sighting_id == sighting_id).order_by(Event.id)
            return [HistoryEntry(e.at, e.keeper.name if e.keeper else None, e.action, dict(e.changes))
                    for e in s.scalars(q)]

    def overview(self) -> list[SpeciesOverview]:
        """Per species (as reviewed, else as answered): sightings, last seen, per place, per ISO week."""
        groups: dict[str, list[SightingView]] = defaultdict(list)
        for v in self.all():
            if v.name is not None:
                groups[v.name].append(v)
        out = []
        for name, views in sorted(groups.items()):
            weeks = Counter(f"{v.observed_at.isocalendar()[0]}-W{v.observed_at.isocalendar()[1]:02d}"
                            for v in views)
            out.append(SpeciesOverview(name, len(views), max(v.observed_at for v in views),
                                       dict(sorted(Counter(v.where for v in views).items())),
                                       dict(sorted(weeks.items()))))
        return out

    # Changing

    def confirm(self, sighting_id: int, by: KeeperView) -> SightingView:
        """A reviewer says the model's species is right."""
        _reviewer(by)
        with self._tx() as s:
            row = self._row(s, sighting_id)
            if row.species_hint is None:
                raise InputError(f"sighting {sighting_id} has no species to confirm",
                                 fix="correct it with the species instead")
            return self._review(s, row, validate.species(row.species_hint), "confirmed", by)

    def correct(self, sighting_id: int, species: str, by: KeeperView) -> SightingView:
        """A reviewer names the species (one of the run's or a new one)."""
        _reviewer(by)
        name = validate.species(species)
        with self._tx() as s:
            return self._review(s, self._row(s, sighting_id), name, "corrected", by)

    def _review(self, s: Session, row: Sighting, species: str, status: str, by: KeeperView) -> SightingView:
        changes = _changes(row, species=species, status=status)
        row.species, row.status, row.reviewed_by, row.reviewed_at = species, status, by.id, self.clock()
        s.add(Event(sighting_id=row.id, keeper_id=by.id, at=row.reviewed_at, action=status, changes=changes))
        s.flush()
        s.refresh(row)
        return _view(row)

    def edit_notes(self, sighting_id: int, notes: str, by: KeeperView) -> SightingView:
        """The keeper who recorded the sighting, or a reviewer, may change its notes."""
        notes = validate.notes(notes)
        with self._tx() as s:
            row = self._row(s, sighting_id)
            if row.keeper_id != by.id and not by.reviewer:
                raise AccessError(f"{by.name} did not record sighting {sighting_id} and is not a reviewer",
                                  fix="ask the keeper who recorded it or a reviewer")
            s.add(Event(sighting_id=row.id, keeper_id=by.id, at=self.clock(), action="notes",
                        changes=_changes(row, notes=notes)))
            row.notes = notes
            s.flush()
            return _view(row)

    def answer_again(self, sighting_id: int, answer: ModelAnswer) -> SightingView:
        """Record a model's new answer. Only the model's columns change: a person's species and status
        stay as they are."""
        fields = _answer_fields(answer)
        with self._tx() as s:
            row = self._row(s, sighting_id)
            s.add(Event(sighting_id=row.id, keeper_id=None, at=self.clock(), action="model answer",
                        changes=_changes(row, **fields)))
            for k, v in fields.items():
                setattr(row, k, v)
            s.flush()
            return _view(row)


def _reviewer(by: KeeperView) -> None:
    if not by.reviewer:
        raise AccessError(f"{by.name} is a keeper, not a reviewer: only reviewers confirm or correct",
                          fix="ask a reviewer, or add one with `monkeysee log keeper add NAME --reviewer`")


def _answer_fields(a: ModelAnswer) -> dict[str, Any]:
    return {"run": validate.optional_text(a.run, "run", validate.RUN_MAX), "rank": validate.rank(a.rank),
            "taxon": validate.optional_text(a.taxon, "taxon", validate.TAXON_MAX),
            "species_hint": validate.optional_text(a.species_hint, "species hint", validate.TAXON_MAX),
            "probability": validate.probability(a.probability), "verdict": validate.verdict(a.verdict)}


def _photo_answer(p: PhotoIn) -> dict[str, Any]:
    a = p.answer
    if a is None:
        return {"weight": p.weight}
    return {"species_hint": validate.optional_text(a.species_hint, "species hint", validate.TAXON_MAX),
            "probability": validate.probability(a.probability), "verdict": validate.verdict(a.verdict),
            "weight": p.weight}


def _changes(row: Sighting, **after: Any) -> dict[str, list[Any]]:
    """{field: [before, after]} for the fields that change."""
    return {k: [getattr(row, k), v] for k, v in after.items() if getattr(row, k) != v}


def _view(r: Sighting) -> SightingView:
    photos = tuple(PhotoView(p.photo.sha256, p.photo.location, p.photo.media_type, p.species_hint,
                             p.probability, p.verdict, p.weight) for p in r.photos)
    return SightingView(
        id=r.id, key=r.key, observed_at=r.observed_at, recorded_at=r.recorded_at,
        place=r.place.name if r.place else None, place_text=r.place_text,
        recorded_by=r.keeper.name if r.keeper else None, run=r.run, rank=r.rank, taxon=r.taxon,
        species_hint=r.species_hint, probability=r.probability, verdict=r.verdict, species=r.species,
        status=r.status, reviewed_by=r.reviewer.name if r.reviewer else None, reviewed_at=r.reviewed_at,
        notes=r.notes, photos=photos)


def open_store(db: str | Path | None = None, photos: str | Path | None = None, default: Path | None = None,
               clock: Clock = _now) -> Store:
    return Store.open(db, photos, default, clock)


__all__: Sequence[str] = ("MAX_PHOTOS", "Store", "open_store", "token_hash")
