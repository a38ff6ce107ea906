"""Every endpoint and every kind of bad input, through a real HTTP client (FastAPI's TestClient)."""

from __future__ import annotations

import base64
import io
import logging
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from monkeysee import __version__
from monkeysee.data.images import load_rgb_bytes
from monkeysee.predict import Predictor
from monkeysee.serve import ServeConfig, create_app

LIMIT = int(0.25 * 1024 * 1024)  # the `app` fixture's --max-upload-mb 0.25


def post(client: TestClient, data: bytes, name: str = "photo.jpg", ctype: str = "image/jpeg", **params):
    return client.post("/api/predict", params=params, files={"photo": (name, data, ctype)})


def decode_data_url(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    im = Image.open(io.BytesIO(base64.b64decode(url[len(prefix):])))
    assert im.format == "PNG"
    return im


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == code
    assert body["detail"] and "Traceback" not in response.text
    return body


# --- the happy path -----------------------------------------------------------------------------------


def test_predict_answers_with_species_probabilities_and_cam(client, make_photo, run_dir):
    data = make_photo((96, 72), seed=1)
    r = post(client, data, heatmap="true")
    assert r.status_code == 200, r.text
    a = r.json()
    probabilities = [g["probability"] for g in a["top"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert len(a["top"]) == 3 and abs(sum(g["probability"] for g in a["top"]) - 1.0) < 1e-5
    best = a["top"][0]
    assert (a["species"], a["latin_name"], a["label"], a["probability"]) == (
        best["common_name"], best["latin_name"], best["label"], best["probability"])
    assert a["unknown"] is False and a["unknown_score"] is None and a["detector"] is None
    assert a["photo"] == {"width": 96, "height": 72}
    # The answer is the one `monkeysee predict` gives for the same photo.
    expected = Predictor.from_run_dir(run_dir).predict_images([load_rgb_bytes(data)], top_k=3)[0].to_dict()
    assert a["top"] == expected["top"]

    cam = a["cam"]
    assert cam["method"] == "gradcam" and cam["layer"] == "body.head" and cam["species"] == a["species"]
    overlay = decode_data_url(cam["overlay"])
    assert overlay.size == (64, 64) and overlay.mode == "RGB"
    heat = decode_data_url(cam["heatmap"])
    assert heat.mode == "RGBA"
    assert abs(heat.width / heat.height - 96 / 72) < 0.05  # the photo's shape, to lay over it
    alpha = np.asarray(heat)[..., 3]
    box = cam["box"]
    x0, y0 = round(box["left"] * heat.width), round(box["top"] * heat.height)
    assert alpha[:, : x0 - 1].max() == 0 and alpha[:, x0 + 65 :].max() == 0  # transparent outside the crop
    assert alpha[y0 + 1 : y0 + 63, x0 + 1 : x0 + 63].min() > 0
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["server-timing"].startswith("total;dur=")


def test_cam_can_be_skipped_without_changing_the_answer(client, make_photo):
    data = make_photo(seed=2)
    with_cam = post(client, data).json()
    without = post(client, data, cam="false").json()
    assert without["cam"] is None and with_cam["cam"]["heatmap"] is None  # heatmap only on request
    del with_cam["cam"], without["cam"]
    assert with_cam == without


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_top_k(client, make_photo, top_k):
    r = post(client, make_photo(seed=3), top_k=top_k, cam="false")
    assert r.status_code == 200 and len(r.json()["top"]) == top_k


@pytest.mark.parametrize("fmt, save", [("PNG", {}), ("WEBP", {}), ("GIF", {}), ("BMP", {}), ("TIFF", {}),
                                       ("JPEG", {"quality": 40})])
def test_any_format_pillow_reads_is_accepted_whatever_its_name(client, make_photo, fmt, save):
    r = post(client, make_photo(seed=4, fmt=fmt, **save), name="notes.txt", ctype="text/plain", cam="false")
    assert r.status_code == 200, r.text


def test_greyscale_and_transparent_photos(client):
    for mode in ("L", "LA", "RGBA", "P", "I;16"):
        im = Image.new(mode, (40, 30))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        assert post(client, buf.getvalue(), "x.png", "image/png").status_code == 200, mode


def test_exif_rotated_photo_is_answered_upright(client, make_photo):
    im = Image.open(io.BytesIO(make_photo((96, 72), seed=5)))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif)
    r = post(client, buf.getvalue(), heatmap="true")
    assert r.json()["photo"] == {"width": 72, "height": 96}  # as the browser shows it
    heat = decode_data_url(r.json()["cam"]["heatmap"])
    assert heat.height > heat.width


# --- bad input: always a JSON 4xx ---------------------------------------------------------------------


def test_empty_file(client):
    assert_error(post(client, b""), 400, "empty_upload")


def test_text_named_jpg(client):
    body = assert_error(post(client, b"this is not a photo\n" * 10, "monkey.jpg"), 415, "not_an_image")
    assert body["detail"].startswith("monkey.jpg: ") and body["fix"]


def test_truncated_jpeg(client, make_photo):
    data = make_photo((96, 72), seed=6)
    assert_error(post(client, data[: len(data) // 2]), 422, "corrupt_image")


def _png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header is rewritten to claim `width` x `height` (the classic pixel bomb)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of header data
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


@pytest.mark.parametrize("width, height", [(100_000, 100_000), (2_000, 1_000)])
def test_decompression_bomb_headers(client, width, height):
    # 2,000 x 1,000 is over this app's 1-megapixel limit; 100,000² is over Pillow's own limit too.
    body = assert_error(post(client, _png_claiming(width, height), "bomb.png"), 413, "too_many_pixels")
    assert "too many pixels" in body["detail"]


def test_small_file_with_too_many_pixels(client):
    buf = io.BytesIO()
    Image.new("RGB", (1200, 1000), (90, 120, 60)).save(buf, format="JPEG")  # ~10 kB, 1.2 megapixels
    assert len(buf.getvalue()) < LIMIT
    assert_error(post(client, buf.getvalue()), 413, "too_many_pixels")


def test_long_thin_photo(client):
    buf = io.BytesIO()
    Image.new("RGB", (2000, 40)).save(buf, format="PNG")
    assert_error(post(client, buf.getvalue(), "strip.png"), 422, "bad_shape")


def test_too_large_upload_declared(client):
    body = assert_error(post(client, b"\xff" * (LIMIT + 40_000)), 413, "too_large")
    assert "0.25 MB" in body["fix"]


def test_too_large_upload_streamed_without_length(client):
    """A chunked body with no Content-Length is cut off once it passes the limit."""
    boundary = "x-monkeysee-test"

    def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"a.jpg\"\r\n"
               "Content-Type: image/jpeg\r\n\r\n").encode()
        for _ in range(40):
            yield b"\xff" * 16_384
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post("/api/predict", content=body(),
                    headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert_error(r, 413, "too_large")


def test_upload_exactly_at_the_limit_is_read(client):
    assert_error(post(client, b"\x00" * LIMIT), 415, "not_an_image")  # read, then refused as not a photo
    assert_error(post(client, b"\x00" * (LIMIT + 1)), 413, "too_large")


def test_missing_photo_field(client):
    body = assert_error(client.post("/api/predict", data={"picture": "x"}), 422, "invalid_request")
    assert body["errors"][0]["loc"] == ["body", "photo"] and "photo" in body["fix"]
    assert_error(client.post("/api/predict"), 422, "invalid_request")
    assert_error(client.post("/api/predict", json={"photo": "aGVsbG8="}), 422, "invalid_request")


def test_photo_sent_as_text_field(client):
    assert_error(client.post("/api/predict", data={"photo": "not a file"}), 422, "invalid_request")


def test_malformed_multipart(client):
    r = client.post("/api/predict", content=b"--nope\r\ngarbage\r\n\r\n",
                    headers={"content-type": "multipart/form-data; boundary=other"})
    assert r.status_code in (400, 422) and r.json()["error"] in ("bad_request", "invalid_request")
    assert "multipart/form-data" in r.json()["fix"] and "photo" in r.json()["fix"]


def test_broken_multipart_body_says_how_to_send_a_photo(client):
    r = client.post("/api/predict", content=b"--b\r\nContent-Disposition: form-data; name=\"photo\"\r\n",
                    headers={"content-type": "multipart/form-data"})  # no boundary: unparseable
    body = assert_error(r, 400, "bad_request")
    assert "curl -F photo=@" in body["fix"]


def test_postscript_named_jpg_is_refused_as_a_format(client):
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    body = assert_error(post(client, eps, "monkey.jpg"), 415, "unsupported_format")
    assert "PostScript" in body["detail"] and body["fix"]


@pytest.mark.parametrize("path", ["/static", "/api/species/", "/health/"])
def test_no_redirect_echoes_the_host_header(client, path):
    r = client.get(path, headers={"host": "evil.example"}, follow_redirects=False)
    assert "evil.example" not in r.headers.get("location", "") and "evil.example" not in r.text
    assert_error(r, 404, "not_found")


def test_the_pixel_limit_quoted_is_the_servers(client):
    body = assert_error(post(client, _png_claiming(100_000, 100_000), "bomb.png"), 413, "too_many_pixels")
    assert "the limit is 1,000,000" in body["detail"] and "178956970" not in body["detail"]


# --- the access token --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked(run_dir):
    with TestClient(create_app(ServeConfig(run_dir, token="s3cret-token")),
                    raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Bearer s3cret-tokenX", "s3cret-token", "Basic x"])
def test_api_without_the_token_is_a_json_401(locked, make_photo, auth):
    headers = {} if auth is None else {"authorization": auth}
    for r in (locked.get("/api/species", headers=headers),
              locked.post("/api/predict", headers=headers,
                          files={"photo": ("a.jpg", make_photo(), "image/jpeg")}),
              locked.get("/api/nothing", headers=headers)):
        body = assert_error(r, 401, "unauthorized")
        assert "Authorization: Bearer" in body["fix"] and r.headers["www-authenticate"].startswith("Bearer")


def test_api_with_the_token_works_and_the_page_stays_open(locked, make_photo):
    good = {"authorization": "Bearer s3cret-token"}
    assert locked.get("/api/species", headers=good).status_code == 200
    assert locked.get("/api/species", headers={"authorization": "bearer s3cret-token"}).status_code == 200
    r = locked.post("/api/predict", headers=good, params={"cam": "false"},
                    files={"photo": ("a.jpg", make_photo(), "image/jpeg")})
    assert r.status_code == 200, r.text
    for path in ("/", "/health", "/static/app.js", "/openapi.json"):
        assert locked.get(path).status_code == 200, path


def test_the_token_is_compared_in_constant_time(run_dir, monkeypatch):
    import hmac

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    with TestClient(create_app(ServeConfig(run_dir, token="t0ken"))) as c:
        assert c.get("/api/species", headers={"authorization": "Bearer t0ken"}).status_code == 200
    assert calls == [(b"bearer t0ken", b"bearer t0ken")]


@pytest.mark.parametrize("params", [{"top_k": 0}, {"top_k": 4}, {"top_k": "three"}, {"cam": "maybe"}])
def test_bad_options(client, make_photo, params):
    body = assert_error(post(client, make_photo(seed=7), **params), 422, "invalid_request")
    assert body["errors"][0]["loc"][0] == "query"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method(client, method):
    r = client.request(method, "/api/predict")
    body = assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST" and body["fix"] == "use POST"
    assert_error(client.post("/health"), 405, "method_not_allowed")


def test_unknown_path(client):
    assert_error(client.get("/api/nothing-here"), 404, "not_found")


def test_odd_file_names_stay_in_the_message_only(client):
    name = "<script>alert(1)</script>\r\n" + "x" * 300
    body = assert_error(post(client, b"plain text", name=name), 415, "not_an_image")
    assert "\n" not in body["detail"] and len(body["detail"].split(":")[0]) <= 80


def test_a_bug_is_a_generic_json_500_and_is_logged(run_dir, make_photo, caplog, monkeypatch):
    app = create_app(ServeConfig(run_dir))
    service = app.state.service

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service, "answer", broken)
    with caplog.at_level(logging.ERROR, logger="monkeysee.serve"), \
            TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/api/predict", files={"photo": ("a.jpg", make_photo(), "image/jpeg")})
    body = assert_error(r, 500, "internal_error")
    assert "secret" not in r.text and "RuntimeError" not in body["detail"]
    assert any("secret internals" in (rec.exc_text or "") or rec.exc_info for rec in caplog.records)


# --- the other endpoints ------------------------------------------------------------------------------


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "version": __version__, "backbone": "efficientnet_lite0",
                        "species_count": 3, "input_size": 64, "explain_layer": "body.head",
                        "precision": r.json()["precision"], "detector": None}
    assert r.json()["precision"] in ("fp32", "bf16")


def test_species(client):
    r = client.get("/api/species")
    assert r.json()["species"] == [
        {"index": 0, "label": "n0", "common_name": "mantled howler", "latin_name": "Alouatta palliata"},
        {"index": 1, "label": "n1", "common_name": "patas monkey", "latin_name": "Erythrocebus patas"},
        {"index": 2, "label": "n2", "common_name": "bald uakari", "latin_name": "Cacajao calvus"},
    ]


def test_openapi_documents_models_and_errors(client):
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/api/predict"]["post"]
    def model(status: str) -> str:
        return op["responses"][status]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]

    assert model("200") == "PredictResponse"
    assert all(model(status) == "ErrorResponse" for status in ("400", "413", "415", "422"))
    assert {p["name"] for p in op["parameters"]} == {"top_k", "cam", "heatmap", "collection"}
    assert "multipart/form-data" in op["requestBody"]["content"]
    for path in ("/health", "/api/species"):
        assert "200" in spec["paths"][path]["get"]["responses"]
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN


def test_page_is_self_contained_and_accessible(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert '<meta name="viewport"' in html and '<html lang="en">' in html
    assert 'type="file"' in html and 'accept="image/*"' in html and '<label for="photo"' in html
    assert 'aria-live="polite"' in html and 'alt="' in html
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert set(assets) == {"/static/app.css", "/static/app.js", "/static/log.js"}
    texts = [html]
    for path in assets:
        a = client.get(path)
        assert a.status_code == 200
        texts.append(a.text)
    for text in texts:  # works offline: nothing fetched from anywhere else
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), "external URL in the page"
    assert "innerHTML" not in texts[2]  # server text only ever goes in as textContent
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"


def test_static_files_cannot_escape_their_folder(client):
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fservice.py"):
        assert client.get(path).status_code == 404


def test_max_pixels_and_upload_size_come_from_the_config(run_dir):
    config = ServeConfig(Path(run_dir), max_upload_mb=3, max_megapixels=2.5)
    assert config.max_upload_bytes == 3 * 1024 * 1024 and config.max_pixels == 2_500_000


def test_the_app_can_be_started_and_stopped_repeatedly(run_dir, make_photo):
    app = create_app(ServeConfig(run_dir))
    for _ in range(2):
        with TestClient(app) as c:
            assert post(c, make_photo(seed=8), cam="false").status_code == 200
