"""The real server: uvicorn on a free loopback port, hit from several threads at once, and the
`monkeysee serve` command started as a process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest


def test_concurrent_clients_get_identical_answers(server_url, make_photo):
    photos = [make_photo(seed=s) for s in range(3)]

    def ask(client: httpx.Client, i: int) -> tuple[int, int, dict]:
        r = client.post(f"{server_url}/api/predict", params={"heatmap": "true"},
                        files={"photo": (f"p{i % 3}.jpg", photos[i % 3], "image/jpeg")})
        return i % 3, r.status_code, r.json()

    with httpx.Client(timeout=60) as c:
        reference = [ask(c, i)[2] for i in range(3)]

    def client_thread(k: int) -> list[tuple[int, int, dict]]:
        with httpx.Client(timeout=60) as c:
            return [ask(c, k + j) for j in range(8)]

    with ThreadPoolExecutor(4) as pool:
        results = [r for batch in pool.map(client_thread, range(4)) for r in batch]
    assert len(results) == 32
    assert all(status == 200 for _, status, _ in results)
    assert all(body == reference[i] for i, _, body in results)


def test_oversized_upload_is_refused_over_http(server_url):
    with httpx.Client(timeout=30) as c:
        r = c.post(f"{server_url}/api/predict", files={"photo": ("big.jpg", b"\xff" * 400_000, "image/jpeg")})
        assert r.status_code == 413 and r.json()["error"] == "too_large"
        # The server keeps answering afterwards.
        assert c.get(f"{server_url}/health").json()["status"] == "ok"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_serve_command_starts_answers_and_stops(run_dir: Path):
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "monkeysee", "serve", str(run_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"server did not start: {proc.communicate(timeout=5)}")
                time.sleep(0.2)
        assert r.json()["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert f"open http://127.0.0.1:{port}/" in err and "warning" not in err
