"""`predict --cams` and the web app answer and explain each photo from ONE forward pass, and the heatmap
they draw is the explain API's Grad-CAM for the same photo, to float precision."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monkeysee.cli import main
from monkeysee.data.images import load_rgb, load_rgb_bytes
from monkeysee.explain import DEFAULT_METHOD, Explainer, render
from monkeysee.models import Classifier
from monkeysee.rundir import load_run
from monkeysee.serve.service import PhotoService
from tests.serve.conftest import build_run, photo_bytes

N_PHOTOS = 5


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A random efficientnet_lite0 at 64 px with a calibrated detector (seconds to build)."""
    return build_run(tmp_path_factory.mktemp("one_pass_run"), with_detector=True)


@pytest.fixture(scope="module")
def photo_paths(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("one_pass_photos")
    paths = []
    for i in range(N_PHOTOS):
        path = folder / f"p{i}.jpg"
        path.write_bytes(photo_bytes((90 + 7 * i, 70), seed=40 + i))
        paths.append(path)
    return paths


@contextmanager
def counting_model_rows() -> Iterator[list[int]]:
    """Batch sizes of every forward call of any monkeysee Classifier, in any thread, while inside."""
    rows: list[int] = []

    def hook(module, args):
        if isinstance(module, Classifier):
            rows.append(int(args[0].shape[0]))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield rows
    finally:
        handle.remove()


@pytest.fixture
def recorded_cams(monkeypatch) -> list[dict]:
    """Every result `Explainer.cams` hands out (the maps the heatmaps are drawn from), in call order."""
    results: list[dict] = []
    original = Explainer.cams

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        results.append(out)
        return out

    monkeypatch.setattr(Explainer, "cams", spy)
    return results


def reference_gradcam(run: Path, images: list[Image.Image]):
    explainer = Explainer.from_run(load_run(run), precision="fp32")
    return explainer.explain(images, methods=("gradcam",))["gradcam"]


def test_predict_cams_runs_one_pass_per_photo_and_draws_the_explain_apis_gradcam(
    run, photo_paths, tmp_path, recorded_cams, capsys
):
    cams = tmp_path / "cams"
    argv = ["predict", str(run), *map(str, photo_paths), "--cams", str(cams), "--precision", "fp32",
            "--batch-size", "2", "--json"]
    with counting_model_rows() as rows:
        assert main(argv) == 0
    assert sum(rows) == N_PHOTOS, f"model saw {rows} rows for {N_PHOTOS} photos"
    assert rows == [2, 2, 1]  # one pass per batch, no second pass for the heatmaps
    capsys.readouterr()

    reference = reference_gradcam(run, [load_rgb(p) for p in photo_paths])
    drawn = np.concatenate([r[DEFAULT_METHOD].upsampled for r in recorded_cams])
    assert DEFAULT_METHOD == "gradcam" and drawn.shape == reference.upsampled.shape
    np.testing.assert_allclose(drawn, reference.upsampled, atol=1e-6)

    written = sorted(cams.glob("*.png"))
    assert len(written) == N_PHOTOS
    expected = reference.overlays()
    for i, path in enumerate(photo_paths):
        label = reference.target_indices[i]
        (png,) = [w for w in written if w.name.startswith(f"{path.stem}-")]
        assert png.name.endswith(f".n{label}.png")  # named after the species the map explains
        got = np.asarray(Image.open(png).convert("RGB")).astype(int)
        assert np.abs(got - expected[i].astype(int)).max() <= 1


def test_serve_answers_each_photo_with_one_pass_and_the_explain_apis_gradcam(run, recorded_cams):
    service = PhotoService.from_run_dir(run, max_pixels=10_000_000, precision="fp32")
    data = [photo_bytes((90 + 7 * i, 70), seed=60 + i) for i in range(3)]
    try:
        answers = []
        for d in data:
            with counting_model_rows() as rows:
                answers.append(service.answer(d, cam=True))
            assert rows == [1], f"one photo took passes of {rows} rows"
    finally:
        service.close()
    # The server answers one photo per pass, so the reference explains one photo per call too: fp32
    # convolutions over a batch of 3 can differ from batch 1 by ~1e-6 on some CPUs (seen on AMD EPYC).
    references = [reference_gradcam(run, [load_rgb_bytes(d)]) for d in data]
    assert len(recorded_cams) == len(data)
    for answer, cams, reference in zip(answers, recorded_cams, references, strict=True):
        np.testing.assert_allclose(cams[DEFAULT_METHOD].upsampled[0], reference.upsampled[0], atol=1e-6)
        assert answer.prediction.best.index == reference.target_indices[0]
        assert answer.cam is not None and answer.cam.method == DEFAULT_METHOD
        png = base64.b64decode(answer.cam.overlay.split(",", 1)[1])
        got = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
        expected = render.overlay(reference.images[0], reference.upsampled[0], service.alpha, service.cmap)
        assert np.abs(got - expected.astype(int)).max() <= 1
