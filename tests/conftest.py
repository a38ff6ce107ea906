"""Shared fixtures: a tiny synthetic data set and a tiny trained run (seconds, no real data)."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monkeysee.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
MONKEYS = SHARED_DATA / "monkeys"
NOT_MONKEYS = SHARED_DATA / "not-monkeys"

# Three "species" that differ in colour and texture, so a pretrained body separates them easily.
COLOURS = {"n0": (200, 40, 40), "n1": (40, 170, 60), "n2": (50, 70, 210)}
LABELS = (
    "Label,  Latin Name           , Common Name                   , Train Images , Validation Images\r\n"
    "n0   , rubra_simia\t , red_monkey                , 10          , 0\r\n"
    "n1   , viridis_simia\t , green_monkey                  , 10          , 0\r\n"
    "n2   , caerulea_simia\t     , blue_monkey                   , 10          , 0\r\n"
)


def synthetic_photo(colour: tuple[int, int, int], seed: int, size: int = 128) -> Image.Image:
    """A photo of one 'species' that passes the photo-quality check: big enough for a 224 px model, with
    contrast (a brightness ramp), stripes off the JPEG 8-px grid (no false 'compressed'), mild noise."""
    rng = np.random.default_rng(seed)
    base = np.array(colour, dtype=np.float32)
    img = base + rng.normal(0, 25, (size, size, 3))
    stripes = (np.arange(size) // (5, 6, 7, 9, 11)[seed % 5]) % 2
    img[:, stripes == 1] *= 0.6
    img *= np.linspace(0.45, 1.25, size, dtype=np.float32)[:, None, None]
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def make_dataset(root: Path, per_class: int = 10) -> Path:
    for c, (label, colour) in enumerate(COLOURS.items()):
        folder = root / "training" / label
        folder.mkdir(parents=True)
        for i in range(per_class):
            synthetic_photo(colour, seed=c * 100 + i).save(folder / f"{label}_{i:02d}.jpg", quality=92)
    (root / "monkey_labels.txt").write_text(LABELS)
    return root


def tiny_config(data: Path, out: Path, **changes) -> TrainConfig:
    """Small enough to train in a few seconds on 2 CPU cores."""
    base = dict(data=str(data), out=str(out), views=1, head_epochs=4, finetune_epochs=2, batch_size=16,
                workers=0, patience=10, val_fraction=0.2, test_fraction=0.2, unknown_detector="energy")
    return TrainConfig(**(base | changes))


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Iterator[Path]:
    """Shared photos: read-only, checked at the end like `tiny_run`."""
    root = make_dataset(tmp_path_factory.mktemp("synthetic"))
    with left_alone(root, "synthetic_data"):
        yield root


def folder_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path: to show a folder was left alone."""
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}


@contextmanager
def left_alone(root: Path, name: str) -> Iterator[None]:
    """Fail (at the fixture's teardown) if any file under `root` was added, changed or removed."""
    before = folder_digest(root)
    yield
    after = folder_digest(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a test wrote into the shared {name} fixture: {changed}"


def private_copy(folder: Path, dest: Path) -> Path:
    """A copy of a shared (session) folder that a test may write into."""
    shutil.copytree(folder, dest)
    return dest


@pytest.fixture(scope="session")
def tiny_run(synthetic_data, tmp_path_factory) -> Iterator[Path]:
    """A trained run shared by the whole session, so it is read-only: a test that evaluates, reports or
    otherwise writes works on `private_copy(tiny_run, tmp_path / "run")`. Checked at the end."""
    from monkeysee.train.trainer import Trainer

    out = tmp_path_factory.mktemp("runs") / "tiny"
    run = Trainer(tiny_config(synthetic_data, out), out).run(log=lambda _: None)
    with left_alone(run, "tiny_run"):
        yield run


CHROMIUM = Path("/usr/bin/chromium")
# Chromium as root in a sandbox with no network: no sandbox, no GPU, no background connections.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium driven by Playwright (its own browser download does not work offline)."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright for Python is not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def wait_until_true(page, expression: str, timeout_s: float = 10.0) -> None:
    """Poll a JavaScript `expression` from Python until it is true. `page.evaluate` runs over the DevTools
    protocol, which the served page's Content-Security-Policy does not block; Playwright's
    `wait_for_function` polls inside the page once its first check fails and compiles the expression
    there, which a CSP without 'unsafe-eval' refuses (so a test failed whenever the images had not
    loaded by the first check)."""
    import time

    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout_s} s: {expression}")
        page.wait_for_timeout(50)


def untrained_run(directory: Path, backbone: str, species: tuple, input_size: int,
                  **manifest: object) -> Path:
    """A run folder holding an untrained `backbone` for `species` at `input_size`, with extra manifest
    fields (taxonomy, ladder, ...): for tests that set the answers by hand, not by training."""
    import torch

    from monkeysee.checkpoint import Manifest
    from monkeysee.models import Preprocess, create_model, get_backbone
    from monkeysee.rundir import RunDir

    torch.manual_seed(0)
    spec = get_backbone(backbone)
    pre = Preprocess(input_size, 0.875, spec.preprocess.interpolation, spec.preprocess.mean,
                     spec.preprocess.std)
    RunDir(directory).save_checkpoint(
        create_model(backbone, num_classes=len(species)),
        Manifest(backbone=backbone, species=species, preprocess=pre, explain_layer=spec.explain_layer,
                 **manifest))
    return directory
