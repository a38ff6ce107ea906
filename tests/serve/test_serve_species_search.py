"""The page's species list can be searched, so it stays usable with hundreds of species."""

from __future__ import annotations

import pytest

from tests.serve.test_serve_browser import page  # noqa: F401  (the page fixture)

pytestmark = pytest.mark.browser


def test_typing_a_name_filters_the_species_list(page, server_url):  # noqa: F811
    page.goto(server_url + "/")
    page.locator("#about", has_text="species").wait_for()
    page.locator("#known summary").click()
    items = page.locator("#species-list li")
    assert items.count() == 3 and page.locator("#species-count").inner_text() == "3 species"
    page.fill("#species-search", "UAKARI")  # any case, common name
    assert [t.strip() for t in page.locator("#species-list li:visible").all_inner_texts()] == [
        items.nth(2).inner_text().strip()]
    assert page.locator("#species-count").inner_text() == "1 of 3 species"
    page.fill("#species-search", "erythrocebus")  # Latin name
    assert page.locator("#species-list li:visible").count() == 1
    page.fill("#species-search", "no such monkey")
    assert page.locator("#species-list li:visible").count() == 0
    page.fill("#species-search", "")
    assert page.locator("#species-list li:visible").count() == 3
