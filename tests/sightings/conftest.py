"""The log's tests run on SQLite and on a real PostgreSQL server: MONKEYSEE_TEST_PG (a URL to a server
where the tests may create databases), else a throwaway server started here from the Debian
`postgresql` binaries (as user `postgres` when run as root), else the PostgreSQL half is skipped
(or fails, when MONKEYSEE_REQUIRE_PG is set, as `.ci/run` does where PostgreSQL is installed)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monkeysee.sightings import Store

START = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A URL of a PostgreSQL server (its `postgres` database) for the whole session."""
    if os.environ.get("MONKEYSEE_TEST_PG"):
        yield os.environ["MONKEYSEE_TEST_PG"]
        return
    bin_dir = _pg_bin()
    if bin_dir is None and os.environ.get("MONKEYSEE_REQUIRE_PG"):
        pytest.fail("MONKEYSEE_REQUIRE_PG is set but no PostgreSQL binaries (initdb) were found")
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql) and MONKEYSEE_TEST_PG is unset")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as an unprivileged user")
    # Its own folder under /tmp: pytest's temporary folders are private to the user running the tests.
    root = Path(tempfile.mkdtemp(prefix="monkeysee-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, sock = root / "data", root
    subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                 "--no-sync", "-E", "UTF8", "--locale", "C"]),
                   check=True, capture_output=True)
    opts = f"-k {sock} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
    subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-l",
                                 str(root / "log.txt"), "start"]), check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={sock}"
    finally:
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the server, dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = "t_" + uuid.uuid4().hex[:12]
    admin = make_url(pg_server).set(drivername="postgresql")
    dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Clock:
    """A clock that ticks one minute per reading, so every stored time is known exactly."""

    def __init__(self, start: datetime = START + timedelta(days=30)) -> None:
        self.t = start

    def __call__(self) -> datetime:
        self.t += timedelta(minutes=1)
        return self.t


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for an empty log: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "log.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[Store]:
    s = Store.open(db_url, photos=tmp_path / "photos", clock=Clock())
    try:
        yield s
    finally:
        s.close()
