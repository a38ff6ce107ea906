"""The report in headless Chromium: every section heading visible, every picture decoded, nothing fetched."""

from __future__ import annotations

import pytest

from tests.conftest import wait_until_true
from tests.report.conftest import SECTION_IDS

pytestmark = pytest.mark.browser



@pytest.fixture
def page(browser, report_html):
    """The report opened from disk on a laptop-sized screen, recording errors and every URL requested."""
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    pg = context.new_page()
    pg.errors, pg.requested = [], []
    pg.on("console", lambda m: m.type == "error" and pg.errors.append(m.text))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("request", lambda r: pg.requested.append(r.url))
    pg.goto(report_html.as_uri(), wait_until="load")
    yield pg
    context.close()


def test_every_section_heading_is_visible(page):
    for sid in SECTION_IDS:
        heading = page.locator(f"section#{sid} > h2")
        heading.scroll_into_view_if_needed()
        assert heading.is_visible(), f"heading of {sid} is not visible"
        assert heading.inner_text().strip()
    box = page.locator("section#overview").bounding_box()
    assert box and box["width"] <= 1366, "the page must fit a laptop screen without sideways scrolling"
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366


def test_every_picture_loads_and_nothing_is_fetched(page, report_html):
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    wait_until_true(page, "[...document.images].every(i => i.complete)")
    images = page.evaluate("[...document.images].map(i => [i.alt, i.naturalWidth, i.naturalHeight])")
    assert len(images) > 20
    broken = [alt for alt, w, h in images if w == 0 or h == 0]
    assert not broken, f"pictures that did not decode: {broken}"
    outside = [u for u in page.requested if not u.startswith("data:") and u != report_html.as_uri()]
    assert not outside, f"the report asked for {outside}"
    assert not page.errors
