"""Backup and restore: one tar file with every row (JSON, in key order) and every photo, readable by
any database the log runs on, so a backup of a SQLite log restores into PostgreSQL and back."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, text

from monkeysee.sightings import database
from monkeysee.sightings.errors import InputError
from monkeysee.sightings.schema import Base, Photo, Sighting, UTCDateTime
from monkeysee.sightings.store import Store

ROWS = "monkeysee-log.json"
FORMAT = 1


def _plain(value: Any) -> Any:  # noqa: ANN401 - a column value
    return value.isoformat() if isinstance(value, datetime) else value


def backup(store: Store, out: Path) -> dict[str, int]:
    """Write the whole log to the tar file `out` (atomically); rows per table."""
    tables: dict[str, list[dict[str, Any]]] = {}
    with store.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = conn.execute(select(table).order_by(*table.primary_key.columns)).mappings()
            tables[table.name] = [{k: _plain(v) for k, v in r.items()} for r in rows]
    doc = {"format": FORMAT, "revision": database.current(store.engine), "tables": tables}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", delete=False) as tmp, \
            tarfile.open(fileobj=tmp, mode="w") as tar:
        data = json.dumps(doc, indent=1, ensure_ascii=False).encode()
        info = tarfile.TarInfo(ROWS)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for photo in tables["photos"]:
            tar.add(store.photos.path(photo["location"]), arcname=f"photos/{photo['location']}")
    Path(tmp.name).replace(out)
    return {name: len(rows) for name, rows in tables.items()}


def restore(store: Store, source: Path) -> dict[str, int]:
    """Load a backup into an empty log; rows per table. Photos go into the store's photo folder."""
    with store.engine.connect() as conn:
        if conn.scalar(select(func.count()).select_from(Sighting)) or \
                conn.scalar(select(func.count()).select_from(Photo)):
            raise InputError("this log is not empty; a backup is restored into an empty one",
                             path=str(store.engine.url), fix="pass --db for a new database")
    doc, photos = _read(Path(source))
    for photo in doc["tables"]["photos"]:
        store.photos.put(photos[photo["location"]], _stored(photo))
    with store.engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            rows = [_typed(table, r) for r in doc["tables"].get(table.name, [])]
            if rows:
                conn.execute(insert(table), rows)
        if conn.dialect.name == "postgresql":  # ids were given: the next ones follow the highest
            for table in Base.metadata.sorted_tables:
                if "id" in table.c:
                    conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                      f"coalesce(max(id), 1), max(id) IS NOT NULL) FROM {table.name}"))
    return {name: len(rows) for name, rows in doc["tables"].items()}


def _read(source: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The rows and the photos (by location) of a backup file."""
    fix = "pass a file made by `monkeysee log backup`"
    try:
        with tarfile.open(source, mode="r") as tar:
            member = tar.extractfile(ROWS) if ROWS in tar.getnames() else None
            if member is None:
                raise InputError(f"{ROWS} is missing", path=source, fix=fix)
            doc = json.loads(member.read())
            if doc.get("format") != FORMAT:
                raise InputError(f"backup format {doc.get('format')!r}, expected {FORMAT}", path=source,
                                 fix=fix)
            photos = {}
            for photo in doc["tables"]["photos"]:
                f = tar.extractfile(f"photos/{photo['location']}")
                if f is None:
                    raise InputError(f"photo {photo['location']} is missing from the backup", path=source,
                                     fix=fix)
                photos[photo["location"]] = f.read()
    except (OSError, tarfile.TarError, KeyError, ValueError) as e:
        raise InputError(f"not a backup of the log ({e})", path=source, fix=fix) from None
    return doc, photos


def _stored(photo: dict[str, Any]) -> Any:  # noqa: ANN401 - a photos.StoredPhoto
    from monkeysee.sightings.photos import StoredPhoto

    return StoredPhoto(photo["sha256"], photo["location"], photo["media_type"], photo["size_bytes"])


def _typed(table: Any, row: dict[str, Any]) -> dict[str, Any]:  # noqa: ANN401 - a sqlalchemy Table
    return {k: datetime.fromisoformat(v) if v is not None and isinstance(table.c[k].type, UTCDateTime) else v
            for k, v in row.items()}
