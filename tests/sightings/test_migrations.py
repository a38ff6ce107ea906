"""Alembic owns the schema: a database made by an older revision is upgraded in place with its rows, and
the ORM classes agree with what the migrations create, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from monkeysee.sightings import Store, database
from monkeysee.sightings.schema import Base
from tests.sightings.conftest import START, Clock


def test_an_older_database_is_upgraded_in_place(db_url: str, tmp_path) -> None:
    url = database.resolve_url(db_url)
    engine = database.create(url)
    database.migrate(engine, "0001")
    assert database.current(engine) == "0001"
    t = datetime(2026, 5, 1, 9, 0) if engine.dialect.name == "sqlite" else START
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO photos (id, sha256, location, media_type, size_bytes) "
                          "VALUES (1, :sha, 'ab/x.jpg', 'image/jpeg', 10)"), {"sha": "ab" * 32})
        conn.execute(text("INSERT INTO sightings (id, key, observed_at, recorded_at, verdict, status, notes, "
                          "taxon) VALUES (1, 'old', :t, :t, 'species', 'unreviewed', 'from 0001', 'Cebus')"),
                     {"t": t})
        conn.execute(text("INSERT INTO sighting_photos (sighting_id, position, photo_id) VALUES (1, 0, 1)"))
    engine.dispose()
    store = Store.open(db_url, photos=tmp_path / "photos", clock=Clock())
    try:
        assert database.current(store.engine) == database.head() == "0002"
        old = store.get(1)
        assert (old.key, old.observed_at, old.notes, old.taxon) == ("old", START, "from 0001", "Cebus")
        assert [(p.sha256, p.species_hint, p.weight) for p in old.photos] == [("ab" * 32, None, None)]
    finally:
        store.close()


def test_the_orm_classes_match_the_migrations(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_opening_twice_migrates_once(db_url: str, tmp_path) -> None:
    a = Store.open(db_url, photos=tmp_path / "photos")
    b = Store.open(db_url, photos=tmp_path / "photos")
    assert database.current(a.engine) == database.current(b.engine) == "0002"
    a.close()
    b.close()
