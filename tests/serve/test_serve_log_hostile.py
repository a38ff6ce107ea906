"""Hostile input to the keeper's log over HTTP: each gets a clear JSON error, and nothing already in the log
is lost or changed; the log down leaves the model's answers served."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from monkeysee.serve import ServeConfig, create_app
from tests.serve.log_fixtures import LOOPBACK, auth, save

SQL = "x'); DROP TABLE sightings; --"


def listed(log_client: TestClient, token: str) -> list[dict]:
    return log_client.get("/api/log/sightings", headers=auth(token)).json()["sightings"]


def test_sql_in_every_text_field_is_kept_as_text_or_refused(log_client, people, make_photo):
    first = save(log_client, [make_photo(seed=20)], people["ana"]).json()
    r = save(log_client, [make_photo(seed=21)], people["ana"], place_text=SQL, notes=SQL)
    assert r.status_code == 201 and (r.json()["place_text"], r.json()["notes"]) == (SQL, SQL)
    for field in ("place", "key"):
        r_bad = save(log_client, [make_photo(seed=22)], people["ana"], **{field: SQL})
        assert (r_bad.status_code, r_bad.json()["error"]) == (422, "invalid_value"), field
    bad = log_client.post(f"/api/log/sightings/{first['id']}/correct", json={"species": SQL},
                      headers=auth(people["rui"]))
    assert bad.status_code == 422 and "species" in bad.json()["detail"]
    def ids(**q: str) -> list[int]:
        return [s["id"] for s in log_client.get("/api/log/sightings", params=q, headers=auth(people["ana"]))
                .json()["sightings"]]

    assert (ids(species=SQL), ids(place=SQL)) == ([], [r.json()["id"]])  # matched as text, exactly
    assert [s["id"] for s in listed(log_client, people["ana"])] == [r.json()["id"], first["id"]]
    assert log_client.get(f"/api/log/sightings/{first['id']}", headers=auth(people["ana"])).json() == first


def test_a_10_mb_note_is_refused_and_nothing_is_saved(log_client, people, make_photo):
    r = save(log_client, [make_photo(seed=23)], people["ana"], notes="n" * 10_000_000)
    assert r.status_code in (400, 413) and r.json()["fix"]
    assert r.json()["error"] in ("bad_request", "too_large")
    long = save(log_client, [make_photo(seed=23)], people["ana"], notes="n" * 5000)
    assert long.status_code == 422 and long.json()["detail"] == "notes is 5,000 characters long; at most " \
        "4,000 are kept"
    assert listed(log_client, people["ana"]) == []


def test_a_species_name_with_a_path_is_refused(log_client, people, make_photo):
    s = save(log_client, [make_photo(seed=24)], people["ana"]).json()
    for name in ("../../etc/passwd", "Alouatta/../x", ".."):
        r = log_client.post(f"/api/log/sightings/{s['id']}/correct", json={"species": name},
                        headers=auth(people["rui"]))
        assert r.status_code == 422 and r.json()["error"] == "invalid_value", name
    assert log_client.get(f"/api/log/sightings/{s['id']}", headers=auth(people["ana"])).json() == s


def test_tokens_name_the_keeper_and_roles_are_enforced(log_client, people, make_photo):
    s = save(log_client, [make_photo(seed=25)], people["ana"], recorded_by="Rui").json()
    assert s["recorded_by"] == "Ana"  # who saves is the token's keeper, whatever the form says
    forged = save(log_client, [make_photo(seed=26)], "not-a-token")
    assert (forged.status_code, forged.json()["error"]) == (401, "unauthorized")
    for token in (people["ana"], None):  # a keeper, and the local keeper (loopback, no token)
        r = log_client.post(f"/api/log/sightings/{s['id']}/correct", json={"species": "Ateles geoffroyi"},
                        headers=auth(token) if token else {})
        assert (r.status_code, r.json()["error"]) == (403, "forbidden")
        assert "reviewer" in r.json()["fix"]
    local = save(log_client, [make_photo(seed=27)])
    assert (local.status_code, local.json()["recorded_by"]) == (201, None)
    assert log_client.get("/api/log/me").json() == {"name": None, "role": "keeper", "local": True}
    assert log_client.get("/api/log/me", headers=auth(people["rui"])).json() == {
        "name": "Rui", "role": "reviewer", "local": False}
    h = log_client.get(f"/api/log/sightings/{s['id']}/history", headers=auth(people["rui"])).json()["history"]
    assert [e["action"] for e in h] == ["recorded"]


def test_beyond_loopback_the_log_needs_a_keepers_token(log_config, people, log_service):
    with TestClient(create_app(log_config, log_service), raise_server_exceptions=False,
                    client=("192.0.2.7", 40000)) as c:
        r = c.get("/api/log/sightings")
        assert (r.status_code, r.json()["error"]) == (401, "unauthorized")
        assert c.get("/api/log/sightings", headers=auth(people["ana"])).status_code == 200


def test_keepers_tokens_pass_the_servers_access_token(run_dir, people, log_db, tmp_path, log_service,
                                                      make_photo):
    cfg = ServeConfig(run_dir, max_upload_mb=0.25, db=log_db, photos=tmp_path / "photos",
                      token="server-secret")
    with TestClient(create_app(cfg, log_service), raise_server_exceptions=False, client=LOOPBACK) as c:
        photo = {"photo": ("p.jpg", make_photo(seed=28))}
        assert c.post("/api/predict?cam=false", files=photo).status_code == 401
        assert c.post("/api/predict?cam=false", files=photo, headers=auth(people["ana"])).status_code == 200
        assert c.post("/api/predict?cam=false", files=photo, headers=auth("nobody")).status_code == 401
        assert save(c, [make_photo(seed=28)]).status_code == 401  # loopback without a token is not enough
        assert save(c, [make_photo(seed=28)], "server-secret").json()["recorded_by"] is None


@pytest.mark.parametrize("db_url, photos", [
    ("postgresql+psycopg://nobody:s3cret@127.0.0.1:1/nothing", "photos"),  # no database server there
    ("log.db", "a-file"),  # a photo folder that cannot be written (a file in its place)
])
def test_the_log_down_leaves_answers_served_and_saving_says_why(run_dir, tmp_path, log_service, make_photo,
                                                                 db_url, photos):
    (tmp_path / "a-file").write_text("")
    db_url = str(tmp_path / db_url) if db_url == "log.db" else db_url
    cfg = ServeConfig(run_dir, max_upload_mb=0.25, db=db_url, photos=tmp_path / photos)
    with TestClient(create_app(cfg, log_service), raise_server_exceptions=False, client=LOOPBACK) as c:
        assert c.post("/api/predict?cam=false", files={"photo": ("p.jpg", make_photo(seed=29))}).status_code \
            == 200
        r = save(c, [make_photo(seed=29)])
        assert (r.status_code, r.json()["error"]) == (503, "log_unavailable")
        assert r.json()["detail"].startswith("the keeper's log cannot be used now: ") and r.json()["fix"]
        assert "s3cret" not in r.text
        assert c.get("/health").status_code == 200


def test_disk_full_while_saving_loses_nothing(log_client, people, make_photo, monkeypatch):
    import errno

    import monkeysee.sightings.photos as photos

    first = save(log_client, [make_photo(seed=30)], people["ana"]).json()

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(photos, "atomic_write_bytes", full)
    r = save(log_client, [make_photo(seed=31)], people["ana"])
    assert (r.status_code, r.json()["error"], r.json()["fix"]) == (503, "log_unavailable", "free disk space")
    monkeypatch.undo()
    assert listed(log_client, people["ana"]) == [first]


schemathesis = pytest.importorskip("schemathesis", reason="Schemathesis is not installed")


@pytest.mark.parametrize("log_db", ["sqlite"], indirect=True)
def test_fuzzed_log_requests_get_documented_answers_and_never_a_5xx(log_config, people, log_service,
                                                                    make_photo):
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    from tests.serve.test_serve_schema import CHECKS, LOG_API

    app = create_app(log_config, log_service)
    with TestClient(app, client=LOOPBACK) as c:
        save(c, [make_photo(seed=32), make_photo(seed=33)], people["ana"])
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ops = {op.label: op for op in (r.ok() for r in schema.get_all_operations())}
    statuses: list[int] = []
    for label in sorted(LOG_API):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=ops[label].as_strategy(generation_mode=mode))
            @settings(max_examples=5, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def check(case: object) -> None:
                r = case.call_and_validate(checks=CHECKS, headers=auth(people["rui"]))  # type: ignore
                statuses.append(r.status_code)

            try:
                check()
            except Unsatisfiable:  # nothing to break in a request without parameters
                assert mode is GenerationMode.NEGATIVE and not ops[label].path_parameters \
                    and not ops[label].query and not ops[label].body
    assert statuses and max(statuses) < 500 and 200 in statuses
