"""Tiny run folders (a random efficientnet_lite0 at 64 px, with and without an unknown detector), photos
made in memory, and a real uvicorn server on a free loopback port."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from monkeysee.checkpoint import Manifest
from monkeysee.data.species import Species
from monkeysee.models import Preprocess, create_model, get_backbone
from monkeysee.models.unknown import build_detector
from monkeysee.predict import Predictor
from monkeysee.rundir import RunDir
from monkeysee.serve import ServeConfig, create_app
from monkeysee.serve.protocol import uvicorn_options
from tests.serve.log_fixtures import log_client, log_config, log_db, log_service, people  # noqa: F401
from tests.sightings.conftest import pg_server, pg_url  # noqa: F401 - the log's PostgreSQL fixtures

BACKBONE = "efficientnet_lite0"
INPUT_SIZE = 64
SPECIES = (
    Species("n0", "mantled_howler", "alouatta_palliata"),
    Species("n1", "patas_monkey", "erythrocebus_patas"),
    Species("n2", "bald_uakari", "cacajao_calvus"),
)


def photo_bytes(size: tuple[int, int] = (96, 72), seed: int = 0, fmt: str = "JPEG", **save: object) -> bytes:
    """A photo-like picture (smooth gradient plus noise) encoded as `fmt`; `seed` changes the pixels."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / max(w - 1, 1), yy / max(h - 1, 1), (xx + yy) / max(w + h - 2, 1)], axis=-1)
    pixels = np.clip(base * 200 + rng.normal(0, 25, (h, w, 3)) + seed * 17 % 50, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **save)
    return buf.getvalue()


def synthetic_photos(n: int, seed: int = 100) -> list[Image.Image]:
    return [Image.open(io.BytesIO(photo_bytes((80, 64), seed + i, "PNG"))).convert("RGB") for i in range(n)]


def build_run(directory: Path, with_detector: bool) -> Path:
    """A run folder as `monkeysee train` writes it: weights, manifest, and optionally the detector."""
    torch.manual_seed(0)
    model = create_model(BACKBONE, num_classes=len(SPECIES))
    spec = get_backbone(BACKBONE)
    pre = Preprocess(INPUT_SIZE, 0.875, spec.preprocess.interpolation, spec.preprocess.mean,
                     spec.preprocess.std)
    manifest = Manifest(backbone=BACKBONE, species=SPECIES, preprocess=pre, explain_layer=spec.explain_layer)
    RunDir(directory).save_checkpoint(model, manifest)
    if with_detector:
        predictor = Predictor.from_run_dir(directory, precision="fp32")
        x = torch.stack([predictor.transform(im) for im in synthetic_photos(16)])
        logits, feats = (t.numpy() for t in predictor.logits_and_features(x))
        detector = build_detector("mahalanobis", feats, logits.argmax(1), logits, feats, keep=0.95)
        RunDir(directory).save_checkpoint(model, manifest, detector)
    return directory


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run without an unknown detector."""
    return build_run(tmp_path_factory.mktemp("run_plain"), with_detector=False)


@pytest.fixture(scope="session")
def detector_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with a Mahalanobis unknown detector, stored the way the trainer stores it."""
    return build_run(tmp_path_factory.mktemp("run_detector"), with_detector=True)


@pytest.fixture(scope="module")
def app(run_dir: Path) -> FastAPI:
    return create_app(ServeConfig(run_dir, max_upload_mb=0.25, max_megapixels=1.0))


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread on a free loopback port; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # The command's own uvicorn options: the header deadline and the JSON 503 connection cap included.
    options = uvicorn_options(app.state.config)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def server_url(run_dir: Path) -> Iterator[str]:
    with live_server(create_app(ServeConfig(run_dir, max_upload_mb=0.25))) as url:
        yield url


@pytest.fixture(scope="session")
def make_photo():
    """`make_photo(size=(96, 72), seed=0, fmt="JPEG", **save_options) -> bytes`."""
    return photo_bytes


@pytest.fixture(scope="session")
def serve():
    """`with serve(app) as url:` runs `app` on a free loopback port for the block."""
    return live_server


def read_reply(s: socket.socket) -> tuple[int, dict[str, str], dict]:
    """Status, headers and JSON body of the one response on `s`, read until the server closes."""
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)
