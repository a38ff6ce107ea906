"""The model side: the one-pass Grad-CAM equals the explain API's, the model is left as found,
micro-batches form under load without changing any answer, and the crop geometry is exact."""

from __future__ import annotations

import gc
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from monkeysee.data.images import load_rgb_bytes
from monkeysee.data.transforms import eval_transform
from monkeysee.errors import ImageError
from monkeysee.explain import Explainer
from monkeysee.models import Preprocess
from monkeysee.serve.service import (
    PhotoService,
    _BatchWorker,
    _Job,
    crop_box,
    heatmap_layer,
    png_data_url,
    rejection,
)

MAX_PIXELS = 10_000_000


@pytest.fixture(scope="module")
def fp32_service(run_dir):
    service = PhotoService.from_run_dir(run_dir, max_pixels=MAX_PIXELS, precision="fp32")
    yield service
    service.close()


def test_one_pass_gradcam_equals_the_explain_api(fp32_service, make_photo):
    photos = [load_rgb_bytes(make_photo((90, 70), seed=s)) for s in range(3)]
    explainer = Explainer.from_run(fp32_service.predictor.run)
    reference = explainer.explain(photos, methods=("gradcam",))["gradcam"]
    outputs = fp32_service._run_batch([_Job(p, cam=True) for p in photos])
    for i, out in enumerate(outputs):
        np.testing.assert_allclose(out.cam, reference.upsampled[i], atol=1e-5)
        assert int(np.argmax(out.logits)) == reference.target_indices[i]


def test_one_pass_prediction_equals_the_predictor(fp32_service, make_photo):
    photos = [load_rgb_bytes(make_photo((90, 70), seed=s)) for s in range(3)]
    expected = fp32_service.predictor.predict_images(photos, top_k=3)
    with_cam = fp32_service._run_batch([_Job(p, cam=True) for p in photos])
    for out, pred in zip(with_cam, expected, strict=True):
        decided = fp32_service.predictor.decide(out.logits[None], out.features[None], ["upload"], 3)[0]
        assert decided.to_dict()["top"] == pred.to_dict()["top"]


def test_unknown_score_uses_the_same_features_as_the_predictor(detector_run_dir, make_photo):
    service = PhotoService.from_run_dir(detector_run_dir, max_pixels=MAX_PIXELS, precision="fp32")
    try:
        data = make_photo(seed=9)
        expected = service.predictor.predict_images([load_rgb_bytes(data)])[0]
        got = service.answer(data, cam=True).prediction
        assert got.unknown_score == pytest.approx(expected.unknown_score, rel=1e-5)
        assert got.unknown == expected.unknown
    finally:
        service.close()


def test_the_model_is_left_as_found(run_dir, make_photo):
    service = PhotoService.from_run_dir(run_dir, max_pixels=MAX_PIXELS)
    model = service.predictor.model
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    service.answer(make_photo(seed=10), cam=True, heatmap=True)
    service.close()
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert not any(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_concurrent_requests_batch_together_with_identical_answers(run_dir, make_photo):
    service = PhotoService.from_run_dir(run_dir, max_pixels=MAX_PIXELS, max_batch=8)
    sizes: list[int] = []
    run = service._worker.run

    def recording(jobs):
        sizes.append(len(jobs))
        return run(jobs)

    service._worker.run = recording
    photos = [make_photo(seed=s) for s in range(3)]
    try:
        reference = [service.answer(p, heatmap=True) for p in photos]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: (i % 3, service.answer(photos[i % 3], heatmap=True)),
                                    range(48)))
    finally:
        service.close()
    assert all(a == reference[i] for i, a in answers)  # bit for bit, whatever the batch
    assert max(sizes) > 1, f"no batch formed: {sizes}"


def test_no_decoded_photo_outlives_its_answer(fp32_service, make_photo):
    # The server's memory budget counts a photo until its request is answered; a copy kept by the model
    # thread after that would lie outside it.
    size = (131, 97)  # a size no other photo here has
    answer = fp32_service.answer(make_photo(size=size, seed=5), cam=False)
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, Image.Image) and o.size == size]
    assert (answer.width, answer.height) == size and alive == []


def test_mixed_batches_answer_each_request_as_asked(fp32_service, make_photo):
    photo = load_rgb_bytes(make_photo(seed=11))
    with_cam, without = fp32_service._run_batch([_Job(photo, cam=True), _Job(photo, cam=False)])
    assert with_cam.cam is not None and with_cam.seen.shape == (64, 64, 3) and with_cam.seen.dtype == np.uint8
    assert without.cam is None and without.seen is None
    np.testing.assert_array_equal(with_cam.logits, without.logits)
    alone = fp32_service._run_batch([_Job(photo, cam=False)])[0]
    np.testing.assert_allclose(alone.logits, without.logits, rtol=1e-5, atol=1e-6)


def test_a_photo_that_breaks_the_transform_fails_alone(fp32_service, make_photo, monkeypatch):
    good = load_rgb_bytes(make_photo(seed=12))
    bad = Image.new("RGB", (7, 7))
    transform = fp32_service.predictor.transform

    def picky(image):
        if image.size == (7, 7):
            raise ValueError("cannot resize this one")
        return transform(image)

    monkeypatch.setattr(fp32_service.predictor, "transform", picky)
    first, broken, last = fp32_service._run_batch([_Job(good, True), _Job(bad, True), _Job(good, False)])
    assert isinstance(broken, ValueError)
    np.testing.assert_array_equal(first.logits, last.logits)
    assert first.cam is not None and last.cam is None


# --- the batch worker ---------------------------------------------------------------------------------


def test_worker_batches_whatever_is_waiting():
    gate, busy = threading.Event(), threading.Event()
    seen: list[int] = []

    def run(jobs):
        seen.append(len(jobs))
        busy.set()
        gate.wait(5)
        return list(jobs)

    worker = _BatchWorker(run, max_batch=3)
    futures = [worker.submit(0)]
    assert busy.wait(5)  # the first job runs alone; the rest queue up behind it
    futures += [worker.submit(i) for i in range(1, 7)]
    gate.set()
    assert [f.result(5) for f in futures] == list(range(7))
    worker.close()
    assert seen[0] == 1 and max(seen) == 3 and sum(seen) == 7


def test_worker_hands_errors_to_every_request_in_the_batch():
    def run(jobs):
        raise RuntimeError("model failed")

    worker = _BatchWorker(run, max_batch=4)
    futures = [worker.submit(i) for i in range(3)]
    for f in futures:
        with pytest.raises(RuntimeError, match="model failed"):
            f.result(5)
    worker.close()

    one_bad = _BatchWorker(lambda jobs: [ValueError("bad photo") if j == 1 else j for j in jobs], max_batch=4)
    futures = [one_bad.submit(i) for i in range(3)]
    assert futures[0].result(5) == 0 and futures[2].result(5) == 2
    with pytest.raises(ValueError, match="bad photo"):
        futures[1].result(5)
    one_bad.close()
    worker.close()
    assert worker.closed and not worker._thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit(0)


# --- geometry and drawing -----------------------------------------------------------------------------


PRE = Preprocess(224, 0.875, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@pytest.mark.parametrize("size, expected", [
    # 400x300 -> resized to 341x256 -> crop 224 at (58, 16); round(58.5) is 58 in Python and torchvision
    ((400, 300), (58 / 341, 16 / 256, 224 / 341, 224 / 256)),
    ((300, 400), (16 / 256, 58 / 341, 224 / 256, 224 / 341)),
    ((256, 256), (16 / 256, 16 / 256, 224 / 256, 224 / 256)),
])
def test_crop_box_is_exact(size, expected):
    assert crop_box(size, PRE) == pytest.approx(expected, abs=1e-12)


def test_crop_box_matches_what_the_transform_crops():
    """A photo whose red channel is its x coordinate: the crop's edge columns tell where it was cut."""
    w, h = 600, 300
    ramp = np.broadcast_to(np.linspace(0, 255, w, dtype=np.float32)[None, :, None], (h, w, 3))
    photo = Image.fromarray(np.ascontiguousarray(ramp).astype(np.uint8))
    pre = Preprocess(224, 0.875, "bilinear", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    crop = eval_transform(pre)(photo)[0].numpy() * 255
    left, _, width, _ = crop_box((w, h), pre)
    assert crop[:, 0].mean() == pytest.approx(255 * left, abs=2.0)
    assert crop[:, -1].mean() == pytest.approx(255 * (left + width), abs=2.0)


def test_heatmap_layer_covers_the_crop_only():
    cam = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    box = (0.25, 0.0, 0.5, 1.0)
    picture = heatmap_layer(cam, box)
    assert picture.shape == (64, 128, 4)
    alpha = picture[..., 3]
    assert alpha[:, :32].max() == 0 and alpha[:, 96:].max() == 0
    inside = alpha[:, 32:96].astype(int)
    assert inside.min() == round(0.15 * 255) and inside.max() == round(0.75 * 255)
    assert np.all(np.diff(inside.ravel()) >= 0)  # more opaque where the map is hotter


def test_png_data_url_round_trips():
    picture = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    url = png_data_url(picture)
    import base64

    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    np.testing.assert_array_equal(decoded, picture)


@pytest.mark.parametrize("problem, status, code", [
    ("upload is empty (0 bytes)", 400, "empty_upload"),
    ("not an image, or a format Pillow does not recognise", 415, "not_an_image"),
    ("image has too many pixels (1x1), possibly a decompression bomb", 413, "too_many_pixels"),
    ("not enough memory to decode this photo", 413, "too_many_pixels"),
    ("truncated or corrupt image data (OSError: x)", 422, "corrupt_image"),
    ("cannot convert colour mode 'CMYK' to RGB", 422, "unreadable_image"),
])
def test_image_errors_map_to_http_answers(problem, status, code):
    r = rejection(ImageError(problem, fix="do this", path="a.jpg"))
    assert (r.status, r.code, r.problem, r.fix, r.path) == (status, code, problem, "do this", "a.jpg")
