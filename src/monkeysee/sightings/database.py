"""Where the log lives: a database URL or a SQLite file, opened with safe settings and migrated.

A SQLite file gets WAL (readers never wait for the writer), foreign keys, a 30 s busy timeout,
`synchronous=FULL` (a sighting acknowledged is on disk) and `BEGIN IMMEDIATE` for every transaction (a
writer takes the lock first instead of failing halfway when another writer got there). PostgreSQL is
used through psycopg 3. Either way `alembic upgrade head` runs on open, under a lock so that several
processes opening a new database at once migrate it once.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from monkeysee.sightings.errors import InputError, StoreUnavailable

ENV_DB = "MONKEYSEE_DB"
MIGRATIONS = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_MS = 30_000
_PG_LOCK = 0x6D6B7973  # the advisory lock taken while migrating a PostgreSQL database


def resolve_url(db: str | os.PathLike[str] | None, default: Path | None = None) -> str:
    """The database URL for `--db` (a URL or a SQLite file path), else MONKEYSEE_DB, else `default`."""
    value = str(db) if db else os.environ.get(ENV_DB) or (str(default) if default else "")
    if not value:
        raise InputError("no sightings database given", fix=f"pass --db FILE.db or a postgresql:// URL, "
                                                            f"or set {ENV_DB}")
    if "://" not in value:
        path = Path(value).expanduser().resolve()
        if not path.parent.is_dir():
            raise InputError("the folder for this SQLite file does not exist", path=path.parent,
                             fix="create the folder or pass another --db")
        return f"sqlite:///{path}"
    try:
        url = make_url(value)
    except ArgumentError as e:
        raise InputError(f"not a database URL ({e})", path=value,
                         fix="write it as postgresql://USER@HOST/DB or sqlite:///PATH") from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise InputError(f"the log runs on SQLite or PostgreSQL, not {url.get_backend_name()}", path=value,
                         fix="pass a SQLite file or a postgresql:// URL")
    return url.render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for another database or an in-memory one."""
    u = make_url(url)
    return Path(u.database) if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:") \
        else None


def create(url: str) -> Engine:
    """An engine with the settings above."""
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_settings)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})


def _sqlite_settings(dbapi_conn: Any, _record: object) -> None:  # noqa: ANN401 - a DB-API connection
    dbapi_conn.isolation_level = None  # transactions are begun by the "begin" listener
    cur = dbapi_conn.cursor()
    for pragma in ("journal_mode=WAL", "foreign_keys=ON", f"busy_timeout={BUSY_TIMEOUT_MS}",
                   "synchronous=FULL"):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def alembic_config(connection: Any = None) -> Config:  # noqa: ANN401 - a SQLAlchemy Connection
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    rev = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert rev is not None
    return rev


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine, revision: str = "head") -> None:
    """`alembic upgrade REVISION` on this database, once however many processes ask at the same time."""
    try:
        if revision == "head" and current(engine) == head():
            return
        with _file_lock(sqlite_path(str(engine.url))), engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
            command.upgrade(alembic_config(conn), revision)
    except DBAPIError as e:
        raise unavailable(str(engine.url), e) from None


@contextmanager
def _file_lock(db_file: Path | None) -> Iterator[None]:
    if db_file is None:
        yield
        return
    with open(db_file.with_name(db_file.name + ".migrate-lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def unavailable(url: str, error: BaseException) -> StoreUnavailable:
    """The error a keeper sees when the database cannot do what was asked: which database and why."""
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    safe = make_url(url).render_as_string(hide_password=True)
    full = "full" in reason.lower() or "no space" in reason.lower()
    fix = "free disk space where the database lives" if full else \
        "check that the database server is running and reachable, then try again"
    return StoreUnavailable(f"the sightings database cannot be used ({reason})", path=safe, fix=fix)
