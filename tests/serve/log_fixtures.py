"""The keeper's log's fixtures for the serve tests (imported by conftest.py): a log on SQLite and on
PostgreSQL, a keeper's and a reviewer's tokens, and an app on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from monkeysee.serve import PhotoService, ServeConfig, create_app
from monkeysee.sightings import Store

LOOPBACK = ("127.0.0.1", 50000)
WHEN = "2026-05-04T10:00:00+00:00"  # a Monday: ISO week 2026-W19


@pytest.fixture(params=["sqlite", "postgresql"])
def log_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "log.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture
def people(log_db: str, tmp_path: Path) -> dict[str, str]:
    """Tokens of a keeper and a reviewer, made the way `monkeysee log keeper add` makes them."""
    store = Store.open(log_db, photos=tmp_path / "photos")
    try:
        return {"ana": store.add_keeper("Ana")[1], "rui": store.add_keeper("Rui", reviewer=True)[1]}
    finally:
        store.close()


@pytest.fixture
def log_config(run_dir: Path, log_db: str, tmp_path: Path) -> ServeConfig:
    return ServeConfig(run_dir, max_upload_mb=0.25, db=log_db, photos=tmp_path / "photos",
                       places=("Monkey house", "Island"))


@pytest.fixture(scope="module")
def log_service(run_dir: Path) -> PhotoService:
    """The model, loaded once per module for its apps (each test gets its own app and log)."""
    c = ServeConfig(run_dir)
    return PhotoService.from_run_dir(run_dir, max_pixels=c.max_pixels, max_batch=c.max_batch,
                                     precision="fp32")


@pytest.fixture
def log_client(log_config: ServeConfig, people: dict[str, str],
               log_service: PhotoService) -> Iterator[TestClient]:
    with TestClient(create_app(log_config, log_service), raise_server_exceptions=False, client=LOOPBACK) as c:
        yield c


def auth(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


def save(client: TestClient, photos: list[bytes], token: str | None = None, **form: str):
    files = [("photos", (f"p{i}.jpg", data, "image/jpeg")) for i, data in enumerate(photos)]
    return client.post("/api/log/sightings", files=files, data={"observed_at": WHEN, **form},
                       headers=auth(token))
