"""The keeper's log in headless Chromium: a keeper saves a sighting with two photos, a reviewer corrects
its species, the log and the species overview show the change with its history, and the Camtrap DP
export of that database validates."""

from __future__ import annotations

import json

import pytest

from monkeysee.serve import ServeConfig, create_app
from monkeysee.sightings import Store
from monkeysee.sightings.exports import ExportOptions, export
from tests.conftest import wait_until_true

pytestmark = pytest.mark.browser
SITE = (51.535, -0.153)


def sign_in(page, token: str) -> None:
    page.fill("#keeper-token", token)
    page.click("#keeper-login button")


def test_a_keeper_saves_a_reviewer_corrects_and_the_export_validates(browser, run_dir, tmp_path, serve,
                                                                       make_photo, monkeypatch):
    frictionless = pytest.importorskip("frictionless")
    db = tmp_path / "log.db"
    store = Store.open(db)
    ana, rui = store.add_keeper("Ana")[1], store.add_keeper("Rui", reviewer=True)[1]
    first, second = tmp_path / "one.jpg", tmp_path / "two.jpg"
    first.write_bytes(make_photo((160, 120), seed=50))
    second.write_bytes(make_photo((160, 120), seed=51))
    page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    config = ServeConfig(run_dir, max_upload_mb=0.25, db=str(db), places=("Monkey house", "Island"))
    with serve(create_app(config)) as url:
        page.goto(url + "/")
        page.locator("#log-who", has_text="local keeper").wait_for()
        sign_in(page, ana)
        page.locator("#log-who", has_text="You are Ana (keeper).").wait_for()

        page.set_input_files("#photo", str(first))
        page.locator("#save-sighting").wait_for()
        page.select_option("#save-place", "Island")
        page.fill("#save-notes", "two on the rope bridge")
        page.set_input_files("#save-more", str(second))
        page.click("#save-button")
        page.locator("#save-status", has_text="Saved as sighting #1.").wait_for()
        assert page.locator("#log-list li").count() == 1
        assert page.locator("#review-list li").count() == 1

        sign_in(page, rui)
        page.locator("#log-who", has_text="You are Rui (reviewer).").wait_for()
        page.locator("#log-list li button").first.click()
        page.locator("#review-form").wait_for()
        page.locator("#detail-photos img").nth(1).wait_for()
        wait_until_true(page, "[...document.querySelectorAll('#detail-photos img')]"
                              ".every((i) => i.complete && i.naturalWidth === 160)")
        assert page.locator("#detail-photos img").count() == 2
        page.fill("#correct-species", "Ateles geoffroyi")
        page.click("#correct-button")
        page.locator("#history li", has_text="corrected").wait_for()

        history = page.locator("#history li").all_inner_texts()
        assert [h.split(" · ")[1:] for h in history] == [
            ["Ana", "recorded"],
            ["Rui", "corrected (species: — → Ateles geoffroyi; status: unreviewed → corrected)"]]
        assert "#1 Ateles geoffroyi · Island" in page.locator("#log-list li").first.inner_text()
        assert "corrected by Rui" in page.locator("#log-list li").first.inner_text()
        assert page.locator("#review-list li").count() == 0
        page.click("#tab-overview")
        row = page.locator("#overview tbody tr[data-name='Ateles geoffroyi']")
        assert row.locator("td").nth(1).inner_text() == "1"
        assert row.locator("td").nth(3).inner_text() == "Island: 1"
        assert row.locator("svg.chart rect").count() == 1
        page.click("#tab-log")
        page.fill("#f-species", "Ateles geoffroyi")
        page.click("#log-filter button")
        page.locator("#log-list li").first.wait_for()
        assert page.locator("#log-list li").count() == 1
    assert errors == []

    store.add_places([])  # the store sees what the server wrote
    [s] = list(store.all())
    assert (s.recorded_by, s.place, s.notes, s.species, s.status, s.reviewed_by, len(s.photos)) == (
        "Ana", "Island", "two on the rope bridge", "Ateles geoffroyi", "corrected", "Rui", 2)
    export(store, "camtrap-dp", tmp_path / "dp", ExportOptions(site=SITE, local_schemas=True))
    store.close()
    monkeypatch.chdir(tmp_path / "dp")  # frictionless reads a local profile from the working folder
    report = frictionless.validate("datapackage.json")
    assert report.valid, report.flatten(["rowNumber", "fieldName", "type", "note"])
    observations = (tmp_path / "dp" / "observations.csv").read_text()
    assert "Ateles geoffroyi" in observations and "human" in observations
    assert json.loads((tmp_path / "dp" / "datapackage.json").read_text())["resources"]
