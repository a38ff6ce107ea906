"""Slow clients, connection floods and memory-hungry photos against the real server (uvicorn on a free
loopback port), with small limits so that each test takes a few seconds."""

from __future__ import annotations

import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from monkeysee.data.images import read_header
from monkeysee.serve import ServeConfig, create_app
from monkeysee.serve.limits import photo_cost
from tests.serve.conftest import read_reply

BOUNDARY = "monkeysee-slow"


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _slow_upload(url: str, length: int = 50_000) -> socket.socket:
    """A connection that sends an upload's headers and first bytes, then nothing more (yet)."""
    s = socket.create_connection(_address(url), timeout=10)
    head = (f"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"s.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n")
    s.sendall(head.encode())
    return s


def _assert_json_error(status: int, body: dict, expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert body["error"] == code and body["detail"] and body["fix"]


def test_slow_uploads_are_cut_off_with_json_408_and_do_not_starve_others(run_dir: Path, serve, make_photo):
    config = ServeConfig(run_dir, upload_timeout=2.0, idle_timeout=1.5, max_uploads=6)
    with serve(create_app(config)) as url, ExitStack() as stack:
        slow = [stack.enter_context(_slow_upload(url)) for _ in range(4)]
        start = time.monotonic()
        with httpx.Client(timeout=10) as c:
            while time.monotonic() - start < 1.6:  # the slow ones trickle on below the idle limit
                for s in slow:
                    s.sendall(b"\xff")
                assert c.get(f"{url}/health").status_code == 200
                r = c.post(f"{url}/api/predict", params={"cam": "false"},
                           files={"photo": ("ok.jpg", make_photo(seed=1), "image/jpeg")})
                assert r.status_code == 200, r.text  # 2 upload slots are left for normal clients
                time.sleep(0.2)
        for s in slow:
            status, headers, body = read_reply(s)
            _assert_json_error(status, body, 408, "timeout")
            assert "within 2 seconds" in body["detail"] and headers["connection"] == "close"


def test_a_stalled_upload_is_cut_off_after_the_idle_limit(run_dir: Path, serve):
    config = ServeConfig(run_dir, upload_timeout=30, idle_timeout=1.0)
    with serve(create_app(config)) as url, _slow_upload(url) as s:
        status, _, body = read_reply(s)  # the upload limit is 30 s: only the idle limit can answer this
        _assert_json_error(status, body, 408, "timeout")
        assert "stalled" in body["detail"]


def test_uploads_beyond_the_limit_get_a_json_503_but_health_answers(run_dir: Path, serve):
    config = ServeConfig(run_dir, upload_timeout=3, idle_timeout=3, max_uploads=2)
    with serve(create_app(config)) as url, _slow_upload(url), _slow_upload(url):
        time.sleep(0.3)
        r = httpx.post(f"{url}/api/predict", files={"photo": ("a.jpg", b"x" * 100, "image/jpeg")}, timeout=10)
        assert r.status_code == 503 and r.headers["content-type"] == "application/json"
        assert r.json()["error"] == "busy" and r.json()["fix"] and r.headers["retry-after"]
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200


def test_trickled_headers_get_a_json_408(run_dir: Path, serve):
    with serve(create_app(ServeConfig(run_dir, idle_timeout=1.0))) as url, \
            socket.create_connection(_address(url), timeout=10) as s:
        for piece in (b"GET /hea", b"lth HTTP/1.1\r\n", b"Host: x\r\n"):  # never the blank line
            s.sendall(piece)
            time.sleep(0.2)
        status, _, body = read_reply(s)
        _assert_json_error(status, body, 408, "timeout")


def test_connections_beyond_the_cap_get_a_json_503(run_dir: Path, serve):
    with serve(create_app(ServeConfig(run_dir, max_connections=6, idle_timeout=5))) as url:
        with ExitStack() as stack:
            for _ in range(6):  # idle connections hold every place
                stack.enter_context(socket.create_connection(_address(url), timeout=10))
            time.sleep(0.2)
            r = httpx.get(f"{url}/health", timeout=5)
            assert r.status_code == 503 and r.json()["error"] == "busy" and r.json()["fix"]
        time.sleep(0.2)
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200


# --- memory ------------------------------------------------------------------------------------------


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """Samples this process's resident memory (the server runs in it) every few milliseconds."""

    def __enter__(self) -> PeakRss:
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def rise_mb(self) -> float:
        return (self.peak - self.start) / 1024**2


def _grey16_png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("I;16", size).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
def test_eight_tiny_16_bit_7000px_pngs_at_once_stay_small(run_dir: Path, serve):
    bomb = _grey16_png((7000, 7000))  # ~100 kB; 392 MB to decode under the default limits
    assert len(bomb) < 200_000
    with serve(create_app(ServeConfig(run_dir))) as url:
        def send(_: int) -> httpx.Response:
            return httpx.post(f"{url}/api/predict", files={"photo": ("deep.png", bomb, "image/png")},
                              timeout=60)

        with PeakRss() as rss, ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(send, range(8)))
    for r in answers:
        assert r.status_code == 413 and r.json()["error"] == "too_many_pixels", r.text
        assert "I;16" in r.json()["detail"] and "the limit is 256 MB" in r.json()["detail"]
    assert rss.rise_mb < 150, f"server memory rose by {rss.rise_mb:.0f} MB"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
def test_photos_under_the_limit_share_the_decode_budget(run_dir: Path, serve):
    # Each costs 2700 x 2700 x 8 bytes to decode (2 stored, 2 for a rotation its EXIF may ask for, 4 for
    # the RGB result) and 4 bytes per pixel of the 73 x 73 photo it is returned as, for the RGB copy the
    # quality measures make. The budget lets two at a time in; six are sent.
    photo = _grey16_png((2700, 2700))
    cost = 2700 * 2700 * 8 + 4 * 73 * 73
    config = ServeConfig(run_dir, max_decode_mb=64, decode_budget_mb=128)
    app = create_app(config)
    with serve(app) as url:
        def send(_: int) -> httpx.Response:
            return httpx.post(f"{url}/api/predict", params={"cam": "false"},
                              files={"photo": ("deep.png", photo, "image/png")}, timeout=120)

        with PeakRss() as rss, ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(send, range(6)))
    assert [r.status_code for r in answers] == [200] * 6, answers[0].text
    budget = app.state.budget
    assert photo_cost(read_header(photo, preprocess=app.state.service.preprocess)) == cost
    assert budget.peak == 2 * cost and budget.free == budget.total == 128 * 1024**2
    ceiling = config.memory_ceiling_bytes / 1024**2
    assert rss.rise_mb < ceiling, f"server memory rose by {rss.rise_mb:.0f} MB, ceiling {ceiling:.0f} MB"


def test_a_photo_costing_more_than_the_whole_budget_is_refused(run_dir: Path, serve, make_photo):
    # 2000 x 1500 RGB PNG: 24,000,000 bytes to decode at full size (within max-decode-mb 22.9), then 4 bytes
    # per pixel of the 97 x 73 photo it is returned as: 24,028,324 bytes, just over a 22.9 MB budget.
    photo = make_photo(size=(2000, 1500), fmt="PNG")
    app = create_app(ServeConfig(run_dir, max_decode_mb=22.9, decode_budget_mb=22.9))
    with serve(app) as url:
        r = httpx.post(f"{url}/api/predict", files={"photo": ("big.png", photo, "image/png")}, timeout=60)
    assert r.status_code == 413 and r.json()["error"] == "too_many_pixels"
    assert photo_cost(read_header(photo, preprocess=app.state.service.preprocess)) == 24_028_324
    assert r.json()["detail"] == ("big.png: photo is 2000x1500 pixels; decoding and answering it take about "
                                  "23 MB, more than the server's budget of 22.9 MB")
    assert app.state.budget.peak == 0


def test_a_jpeg_is_budgeted_at_the_size_it_decodes_to_and_answered_with_its_own_size(run_dir: Path, serve,
                                                                                      make_photo):
    # The same 2000 x 1500 as a JPEG is drafted in the decoder to the size the model needs: it fits.
    photo = make_photo(size=(2000, 1500))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown upright as portrait
    turned = make_photo(size=(2000, 1500), exif=exif.tobytes())
    app = create_app(ServeConfig(run_dir, max_decode_mb=16, decode_budget_mb=20))
    with serve(app) as url:
        r, rt = (httpx.post(f"{url}/api/predict", params={"cam": "false"}, timeout=60,
                            files={"photo": ("big.jpg", p, "image/jpeg")}) for p in (photo, turned))
    assert r.status_code == 200 and rt.json()["photo"] == {"width": 1500, "height": 2000}
    service = app.state.service
    headers = [read_header(p, "big.jpg", preprocess=service.preprocess) for p in (photo, turned)]
    assert all(h.scale > 1 for h in headers)
    assert app.state.budget.peak == max(map(photo_cost, headers)) < 20 * 1024**2
    assert r.json()["photo"] == {"width": 2000, "height": 1500}


def test_memory_ceiling_adds_up_the_limits(run_dir: Path):
    config = ServeConfig(run_dir)
    mb = 1024**2
    assert config.memory_ceiling_bytes == 512 * mb + 8 * 10 * mb + 128 * (mb + 64 * 1024) + 512 * 64 * 1024
    assert 700 * mb < config.memory_ceiling_bytes < 800 * mb  # "about 0.75 GB" in the README and --help
    assert np.isclose(config.max_decode_bytes, 256 * mb)
