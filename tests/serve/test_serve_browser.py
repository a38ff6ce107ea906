"""The page in headless Chromium: upload a photo, read the species, see and toggle the heatmap."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from monkeysee.serve import ServeConfig, create_app
from tests.conftest import COLOURS, NOT_MONKEYS, make_dataset, synthetic_photo, tiny_config

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser):
    """A phone-sized page that records console errors and every URL it asks for."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    pg = context.new_page()
    pg.console_errors = []
    pg.requested = []
    pg.on("console", lambda m: m.type == "error" and pg.console_errors.append(m.text))
    pg.on("pageerror", lambda e: pg.console_errors.append(str(e)))
    pg.on("request", lambda r: pg.requested.append(r.url))
    yield pg
    context.close()


def upload(page, url: str, path: Path) -> None:
    page.goto(url + "/")
    page.locator("#about", has_text="species").wait_for()  # the model description has loaded
    page.set_input_files("#photo", str(path))
    page.wait_for_selector("#result .answer, #result .unknown, #result .error", timeout=30_000)


def test_upload_shows_species_and_toggles_the_heatmap(page, server_url, make_photo, tmp_path):
    photo = tmp_path / "monkey.jpg"
    photo.write_bytes(make_photo((160, 120), seed=30))
    expected = httpx.post(f"{server_url}/api/predict", params={"cam": "false"},
                          files={"photo": ("monkey.jpg", photo.read_bytes(), "image/jpeg")}).json()

    upload(page, server_url, photo)
    assert page.locator("#result .common").inner_text().lower() == expected["species"]
    assert page.locator("#result .latin").inner_text() == expected["latin_name"]
    assert "sure" in page.locator("#result .confidence").inner_text()
    assert page.locator("#result").get_attribute("aria-live") == "polite"
    assert page.locator("#shown").get_attribute("src").startswith("blob:")

    heat = page.locator("#heat")
    toggle = page.get_by_label("Show where I looked")
    assert heat.is_visible() and heat.get_attribute("src").startswith("data:image/png;base64,")
    assert expected["species"] in heat.get_attribute("alt")
    box, photo_box = heat.bounding_box(), page.locator("#shown").bounding_box()
    assert box == pytest.approx(photo_box, abs=1)  # laid exactly over the photo
    toggle.uncheck()
    assert heat.is_hidden()
    toggle.check()
    assert heat.is_visible()

    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], "the page scrolls sideways on a phone"
    page.screenshot(path=str(tmp_path / "result.png"), full_page=True)
    assert page.console_errors == []
    assert all(u.startswith((server_url, "data:", "blob:")) for u in page.requested), page.requested


def test_a_file_that_is_not_a_photo_shows_the_reason(page, server_url, tmp_path):
    fake = tmp_path / "holiday.jpg"
    fake.write_text("not a photo at all")
    upload(page, server_url, fake)
    alert = page.locator("#result [role=alert]")
    assert "not an image" in alert.inner_text()
    assert page.locator("#heat").is_hidden() and page.get_by_label("Show where I looked").is_disabled()
    page.locator("#view").wait_for(state="hidden")  # no broken-image icon for a file that is no picture


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory) -> Path:
    """A tiny trained run whose kNN detector and threshold were calibrated by the trainer on its own
    photos (seconds), so the verdict below is the run's real one, not a hand-set threshold."""
    from monkeysee.train.trainer import Trainer

    root = tmp_path_factory.mktemp("calibrated")
    data = make_dataset(root / "data")
    config = tiny_config(data, root / "run", unknown_detector="knn")
    return Trainer(config, root / "run").run(log=lambda _: None)


def test_unknown_animals_are_named_as_such(page, serve, calibrated_run, tmp_path):
    animals = sorted(NOT_MONKEYS.glob("*.JPEG")) if NOT_MONKEYS.is_dir() else []
    if not animals:
        pytest.skip(f"no photos of other animals at {NOT_MONKEYS}")
    fish = animals[0]  # a tench: nothing like the three coloured, striped species it learned
    known = tmp_path / "blue.jpg"
    synthetic_photo(COLOURS["n2"], seed=902).save(known, quality=92)  # a new photo of a species it knows
    with serve(create_app(ServeConfig(calibrated_run))) as url:
        upload(page, url, fish)
        card = page.locator("#result .unknown")
        assert card.locator("h2").inner_text() == "Not one of my species"
        nearest = httpx.get(f"{url}/api/species").json()["species"]
        assert any(s["common_name"] in card.inner_text().lower() for s in nearest)
        assert "hint only" in card.inner_text()
        assert page.locator("#heat").is_visible()
        page.screenshot(path=str(tmp_path / "unknown.png"), full_page=True)

        upload(page, url, known)
        assert page.locator("#result .unknown").count() == 0
        assert page.locator("#result .common").inner_text().lower().replace("_", " ") == "blue monkey"
    assert page.console_errors == []


def test_the_page_asks_for_the_token_once_and_then_works(page, serve, run_dir, make_photo, tmp_path):
    photo = tmp_path / "monkey.jpg"
    photo.write_bytes(make_photo((160, 120), seed=32))
    sent: list[str | None] = []
    page.on("request", lambda r: "/api/" in r.url and sent.append(r.headers.get("authorization")))
    with serve(create_app(ServeConfig(run_dir, token="zoo-keeper-token"))) as url:
        page.goto(url + "/")
        login = page.locator("#login")
        login.wait_for(state="visible")
        assert page.locator("#upload").is_hidden()
        page.fill("#token", "a-wrong-guess")
        page.click("#login button")
        page.locator("#login-error", has_text="not accepted").wait_for()
        assert login.is_visible()
        page.fill("#token", "zoo-keeper-token")
        page.click("#login button")
        page.locator("#about", has_text="species").wait_for()  # /api/species answered
        assert login.is_hidden() and page.locator("#upload").is_visible()
        page.set_input_files("#photo", str(photo))
        page.wait_for_selector("#result .answer, #result .unknown, #result .error", timeout=30_000)
        assert page.locator("#result .error").count() == 0
        assert page.evaluate("sessionStorage.getItem('monkeysee-token')") == "zoo-keeper-token"
        page.reload()  # asked once: the tab remembers it
        page.locator("#about", has_text="species").wait_for()
        assert login.is_hidden()
    assert sent[0] is None and "Bearer a-wrong-guess" in sent
    assert sent[-1] == "Bearer zoo-keeper-token"
    predicts = [h for h in sent if h == "Bearer zoo-keeper-token"]
    assert len(predicts) >= 3  # species, predict, species after the reload
    assert all("401" in e or "Unauthorized" in e for e in page.console_errors), page.console_errors
