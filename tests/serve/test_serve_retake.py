"""A photo too poor to judge: the API says so beside the species hint; the page says "take another photo"."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image, ImageFilter

from tests.serve.test_serve_browser import page, upload  # noqa: F401  (the page fixture)


def _blurred(make_photo) -> bytes:
    sharp = Image.open(io.BytesIO(make_photo((160, 120), seed=30))).convert("RGB")
    buf = io.BytesIO()
    sharp.filter(ImageFilter.GaussianBlur(6)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_api_gives_the_quality_verdict(server_url, make_photo):
    sharp = httpx.post(f"{server_url}/api/predict", params={"cam": "false"},
                       files={"photo": ("sharp.jpg", make_photo((160, 120), seed=30), "image/jpeg")}).json()
    assert sharp["quality"] == {"ok": True, "problems": []} and sharp["verdict"] != "retake"
    blurred = httpx.post(f"{server_url}/api/predict", params={"cam": "false"},
                         files={"photo": ("blurred.jpg", _blurred(make_photo), "image/jpeg")}).json()
    assert blurred["quality"]["ok"] is False and "blurred" in blurred["quality"]["problems"]
    assert blurred["verdict"] == "retake" and blurred["unknown"] is False  # never "not one of my species"
    assert blurred["species"] == blurred["top"][0]["common_name"]  # the hint is still given


@pytest.mark.browser
def test_page_says_take_another_photo_and_why(page, server_url, make_photo, tmp_path):  # noqa: F811
    photo = tmp_path / "blurred.jpg"
    photo.write_bytes(_blurred(make_photo))
    upload(page, server_url, photo)
    box = page.locator("#result .retake")
    assert box.locator("h2").inner_text() == "Take another photo"
    assert "blurred" in box.inner_text()
    assert "hint" in box.locator(".hint").inner_text()
