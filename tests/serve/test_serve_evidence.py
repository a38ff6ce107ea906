"""The evidence in the API: the answer's `evidence` field and the thumbnail endpoint, which takes only a
training photo's number (no path), answers within the thumbnail size cap, and refuses everything else."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from monkeysee.data.thumbnails import MAX_BYTES, pack, thumbnail
from monkeysee.models.evidence import EvidenceBank
from monkeysee.predict import Predictor
from monkeysee.rundir import RunDir
from monkeysee.serve import ServeConfig, create_app
from tests.conftest import wait_until_true
from tests.serve.conftest import SPECIES, build_run, synthetic_photos

PHOTOS = 6


@pytest.fixture(scope="module")
def evidence_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run whose evidence bank holds six synthetic photos, two per species."""
    directory = build_run(tmp_path_factory.mktemp("run_evidence"), with_detector=False)
    predictor = Predictor.from_run_dir(directory, precision="fp32")
    images = synthetic_photos(PHOTOS, seed=300)
    _, feats = predictor.logits_and_features(torch.stack([predictor.transform(im) for im in images]))
    bank = EvidenceBank(feats.numpy(), np.arange(PHOTOS) % 3, np.array([1, 0, 0]), SPECIES)
    blob, offsets = pack(thumbnail(im) for im in images)
    RunDir(directory).save_evidence(bank, blob, offsets, [f"n{i % 3}/{i}.png" for i in range(PHOTOS)])
    return directory


@pytest.fixture(scope="module")
def client(evidence_run: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ServeConfig(evidence_run)), raise_server_exceptions=False) as c:
        yield c


def test_answer_carries_the_nearest_training_photos(client: TestClient, make_photo) -> None:
    r = client.post("/api/predict", files={"photo": ("a.jpg", make_photo(seed=3), "image/jpeg")},
                    params={"cam": "false"})
    assert r.status_code == 200, r.text
    body = r.json()
    ev = body["evidence"]
    assert [s["index"] for s in ev["species"]] == [g["index"] for g in body["top"][:2]]
    for s in ev["species"]:
        assert len(s["nearest"]) == 2  # two training photos per species
        assert all(n["photo"] % 3 == s["index"] for n in s["nearest"])
        sims = [n["similarity"] for n in s["nearest"]]
        assert sims == sorted(sims, reverse=True)
    assert ev["confused_with"]["index"] == [1, 0, 0][ev["species"][0]["index"]]
    assert isinstance(ev["check"], bool)
    assert ev["check"] == (ev["nearest_vote"]["index"] != ev["species"][0]["index"])


def test_thumbnail_endpoint_serves_webp_within_the_cap(client: TestClient) -> None:
    for photo in range(PHOTOS):
        r = client.get(f"/api/evidence/{photo}")
        assert r.status_code == 200
        assert r.headers["content-type"] == "image/webp"
        assert len(r.content) <= MAX_BYTES
        assert Image.open(io.BytesIO(r.content)).format == "WEBP"


@pytest.mark.parametrize("path", [f"/api/evidence/{PHOTOS}", "/api/evidence/-1", "/api/evidence/1.5",
                                  "/api/evidence/..%2F..%2Fmanifest.json", "/api/evidence/%2E%2E",
                                  "/api/evidence/0%2F..%2F..%2Fmanifest.json", "/api/evidence/"])
def test_thumbnail_endpoint_refuses_anything_but_a_photo_number(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code in (404, 422)
    assert r.headers["content-type"] == "application/json"
    assert "backbone" not in r.text  # never the manifest


def test_a_run_without_evidence_answers_null_and_404(run_dir: Path, make_photo) -> None:
    with TestClient(create_app(ServeConfig(run_dir)), raise_server_exceptions=False) as c:
        r = c.post("/api/predict", files={"photo": ("a.jpg", make_photo(), "image/jpeg")},
                   params={"cam": "false"})
        assert r.status_code == 200 and r.json()["evidence"] is None
        r = c.get("/api/evidence/0")
        assert r.status_code == 404 and r.json()["error"] == "not_found"


@pytest.mark.browser
def test_page_shows_the_nearest_training_photos(browser, evidence_run: Path, serve, make_photo,
                                                tmp_path: Path) -> None:
    from tests.serve.test_serve_browser import upload

    photo = tmp_path / "monkey.jpg"
    photo.write_bytes(make_photo((160, 120), seed=30))
    page = browser.new_page(viewport={"width": 390, "height": 844})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    with serve(create_app(ServeConfig(evidence_run))) as url:
        upload(page, url, photo)
        block = page.locator("#result .evidence")
        assert block.locator("h3").count() == 2 and "Nearest" in block.locator("h3").first.inner_text()
        images = block.locator("img")
        assert images.count() == 4  # two training photos of each of the two species
        wait_until_true(page, "[...document.querySelectorAll('#result .evidence img')]"
                              ".every((i) => i.complete && i.naturalWidth > 0)")
        assert images.first.get_attribute("src").startswith("blob:")
        assert "similar" in block.locator("figcaption").first.inner_text()
    page.close()
    assert errors == []
