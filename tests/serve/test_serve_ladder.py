"""Answers at genus rank and the collection list through the API and on the page (headless Chromium)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from monkeysee.serve import ServeConfig, create_app
from tests.conftest import untrained_run
from tests.serve.conftest import BACKBONE, INPUT_SIZE, SPECIES, live_server, photo_bytes

# every species in one genus: the genus is always sure; only a species that holds all of the probability
# (the one species of a request's collection) reaches the species threshold of 1
TAXONOMY = {"ranks": ["genus", "family"], "source": "hand-built",
            "lineage": {s.label: ["Simia", "Simiidae"] for s in SPECIES}}
LADDER = {"accuracy": 0.99, "ranks": ["species", "genus", "family"], "thresholds": [1.0, 0.5, 0.5],
          "source": "hand-set"}


@pytest.fixture(scope="module")
def genus_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return untrained_run(tmp_path_factory.mktemp("genus_run"), BACKBONE, SPECIES, INPUT_SIZE,
                         taxonomy=TAXONOMY, ladder=LADDER)


@pytest.fixture(scope="module")
def client(genus_run: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ServeConfig(genus_run, max_upload_mb=0.25))) as c:
        yield c


def post(client: TestClient, **params: str) -> dict:
    r = client.post("/api/predict", params={"cam": "false", **params},
                    files={"photo": ("m.jpg", photo_bytes((96, 72), seed=3), "image/jpeg")})
    assert r.status_code == 200, r.text
    return r.json()


def test_an_answer_at_genus_rank_keeps_the_species_hint(client):
    a = post(client)
    assert (a["verdict"], a["rank"], a["taxon"], a["taxon_probability"]) == ("species", "genus", "Simia", 1.0)
    assert a["species"] == a["top"][0]["common_name"] and a["probability"] < 1.0


def test_a_request_collection_of_one_species_answers_it_at_species_rank(client):
    a = post(client, collection="Patas monkey")
    assert (a["rank"], a["taxon"], a["species"], a["probability"]) == ("species", "patas monkey",
                                                                       "patas monkey", 1.0)
    assert [g["label"] for g in a["top"]] == ["n1"]


def test_a_request_collection_naming_an_unknown_species_is_refused(client):
    r = client.post("/api/predict", params={"collection": "n0,gorilla"},
                    files={"photo": ("m.jpg", photo_bytes((96, 72), seed=3), "image/jpeg")})
    assert r.status_code == 422
    assert r.json()["error"] == "unknown_species" and "'gorilla'" in r.json()["detail"]


@pytest.mark.browser
def test_the_page_says_the_genus_and_that_the_species_is_uncertain(browser, genus_run, tmp_path):
    photo = tmp_path / "m.jpg"
    photo.write_bytes(photo_bytes((160, 120), seed=30))
    with live_server(create_app(ServeConfig(genus_run, max_upload_mb=0.25))) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.locator("#about", has_text="species").wait_for()
        page.set_input_files("#photo", str(photo))
        card = page.locator("#result .rank-answer")
        card.wait_for(timeout=30_000)
        assert card.locator(".lead").inner_text() == "This looks like a member of the genus"
        assert card.locator("h2").inner_text() == "Simia"
        assert card.locator(".doubt").inner_text().startswith("The species is uncertain: ")
        page.close()


def test_the_served_collection_holds_unless_a_request_sends_its_own(genus_run, tmp_path):
    (tmp_path / "zoo.txt").write_text("bald uakari\n")
    with TestClient(create_app(ServeConfig(genus_run, collection=str(tmp_path / "zoo.txt")))) as c:
        a = post(c)
        assert ([g["label"] for g in a["top"]], a["rank"], a["taxon"]) == (["n2"], "species", "bald uakari")
        assert post(c, collection="n0,n1")["top"][0]["label"] in {"n0", "n1"}
