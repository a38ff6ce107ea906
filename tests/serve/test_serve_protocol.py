"""The connection level under the app (serve/protocol.py and the upload guard): limits per client address
and JSON answers for requests the HTTP parser rejects, against the real server on loopback. A second
client address is 127.0.0.2 (127.0.0.3 in another test, so that no test waits for the server to count
the connections of the one before): Linux routes all of 127.0.0.0/8 to the loopback interface."""

from __future__ import annotations

import socket
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from monkeysee.serve import ServeConfig, create_app
from monkeysee.serve.protocol import FIX_HTTP
from tests.serve.conftest import read_reply

OTHER = "127.0.0.2"
BOUNDARY = "monkeysee-held"


def _connect(url: str, source: str = "127.0.0.1") -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    s.bind((source, 0))
    s.connect((host, int(port)))
    return s


def _client(source: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=30)


def _held_upload(url: str, source: str) -> socket.socket:
    """An upload that the app has taken in (it asked for the body: `100 Continue`) and that never ends."""
    s = _connect(url, source)
    s.sendall(f"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\nExpect: 100-continue\r\n"
              f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n".encode())
    assert s.recv(4096).startswith(b"HTTP/1.1 100 ")
    return s


@pytest.fixture(scope="module")
def tight_url(run_dir: Path, serve):
    config = ServeConfig(run_dir, max_connections_per_client=4, max_uploads_per_client=2, idle_timeout=5,
                         upload_timeout=5)
    with serve(create_app(config)) as url:
        yield url


def test_one_address_trickling_headers_cannot_take_the_connections_others_need(tight_url, make_photo):
    with ExitStack() as stack:
        held = [stack.enter_context(_connect(tight_url, OTHER)) for _ in range(4)]
        for s in held:
            s.sendall(b"GET /hea")  # headers that never end
        extra = stack.enter_context(_connect(tight_url, OTHER))
        status, headers, body = read_reply(extra)
        assert (status, headers["content-type"], headers["retry-after"], headers["connection"]) == (
            503, "application/json", "2", "close")
        assert body == {"error": "busy",
                        "detail": "this address has 4 connections open to the server already",
                        "fix": "close idle connections, or try again in a few seconds"}
        with _client("127.0.0.1") as keeper:
            assert keeper.get(f"{tight_url}/health").json()["status"] == "ok"
            r = keeper.post(f"{tight_url}/api/predict", params={"cam": "false"},
                            files={"photo": ("ok.jpg", make_photo(seed=3), "image/jpeg")})
            assert r.status_code == 200 and r.json()["photo"] == {"width": 96, "height": 72}


def test_one_address_cannot_take_the_upload_slots_others_need(tight_url, make_photo):
    third = "127.0.0.3"
    with _held_upload(tight_url, third), _held_upload(tight_url, third), _client(third) as same:
        r = same.post(f"{tight_url}/api/predict", files={"photo": ("a.jpg", make_photo(), "image/jpeg")})
        assert (r.status_code, r.headers["retry-after"]) == (503, "2")
        assert r.json() == {"error": "busy", "detail": "this address has 2 uploads in flight already",
                            "fix": "try again in a few seconds"}
        with _client("127.0.0.1") as keeper:
            r = keeper.post(f"{tight_url}/api/predict", params={"cam": "false"},
                            files={"photo": ("ok.jpg", make_photo(seed=4), "image/jpeg")})
            assert r.status_code == 200 and r.json()["photo"] == {"width": 96, "height": 72}


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nno colon in this header\r\n\r\n",
    b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nHost: y\r\nTransfer-Encoding: gzip\r\n\r\n",
])
def test_requests_the_http_parser_rejects_get_the_json_error(server_url, raw):
    with _connect(server_url) as s:
        s.sendall(raw)
        status, headers, body = read_reply(s)
    assert (status, headers["content-type"], headers["connection"]) == (400, "application/json", "close")
    assert body == {"error": "bad_request",
                    "detail": "the request is not valid HTTP/1.1 (bad request line, header or framing)",
                    "fix": FIX_HTTP}
    assert httpx.get(f"{server_url}/health", timeout=10).status_code == 200
