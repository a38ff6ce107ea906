"""Photo-quality verdicts on constructed photos: each defect is named, and only that defect."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageFilter

from monkeysee.data import quality
from monkeysee.data.quality import PROBLEMS, assess


def _scene(side: int = 256, seed: int = 0) -> Image.Image:
    """A grey 'photo' with detail at every scale and a full tonal range, and no noise of its own.

    Grey (R = G = B) so it has no colour noise; smooth patches of brightness with sharp-edged shapes.
    """
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.uniform(0, 255, (side // 16, side // 16)).astype(np.uint8))
    x = np.asarray(coarse.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float64)
    fine = Image.fromarray(rng.uniform(0, 255, (side, side)).astype(np.uint8))
    fine = fine.filter(ImageFilter.GaussianBlur(1))
    x = 0.6 * x + 0.4 * (np.asarray(fine, dtype=np.float64) - 128) * 3 + 50
    g = np.clip(x, 5, 250).astype(np.uint8)
    return Image.fromarray(np.stack([g, g, g], axis=-1), "RGB")


def _scaled(im: Image.Image, factor: float) -> Image.Image:
    return Image.fromarray(np.clip(np.asarray(im, dtype=np.float64) * factor, 0, 255).astype(np.uint8))


def test_a_good_photo_is_ok() -> None:
    q = assess(_scene())
    assert q.ok and q.problems == ()
    assert q.measures.short_side == 256


def test_blurred_photo() -> None:
    assert assess(_scene().filter(ImageFilter.GaussianBlur(4))).problems == ("blurred",)


def test_dark_photo() -> None:
    q = assess(_scaled(_scene(), 0.25))
    assert q.problems == ("too dark",)
    assert q.measures.highlights == pytest.approx(0.25 * assess(_scene()).measures.highlights, abs=0.01)


def test_tiny_photo() -> None:
    assert assess(_scene(96)).problems == ("too small",)
    assert assess(_scene(quality.MIN_SHORT_SIDE)).ok


def test_overexposed_photo() -> None:
    assert assess(_scaled(_scene(), 3.0)).problems == ("overexposed",)


def test_noisy_photo() -> None:
    x = np.asarray(_scene(), dtype=np.float64)
    noisy = x + np.random.default_rng(0).normal(0, 20, x.shape)
    q = assess(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)))
    assert q.problems == ("noisy",)
    assert q.measures.noise == pytest.approx(20, rel=0.1)  # the colour-difference estimate reads sigma


def test_heavily_compressed_photo() -> None:
    buffer = io.BytesIO()
    _scene().save(buffer, format="JPEG", quality=10)
    q = assess(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    assert "compressed" in q.problems
    assert q.measures.blockiness > 2 * quality.MAX_BLOCKINESS - 1


def test_low_contrast_photo() -> None:
    x = np.asarray(_scene(), dtype=np.float64)
    flat = x.mean() + (x - x.mean()) * 0.3
    assert assess(Image.fromarray(flat.astype(np.uint8))).problems == ("low contrast",)


def test_to_dict_is_json_with_the_verdict_and_measures() -> None:
    d = assess(_scaled(_scene(96), 0.25)).to_dict()
    json.dumps(d, allow_nan=False)
    assert d["ok"] is False and d["problems"] == ["too small", "too dark"]  # PROBLEMS order
    assert set(d) == {"ok", "problems", "short_side", "sharpness", "noise", "blockiness", "brightness",
                      "highlights", "clipped", "contrast"}
    assert set(d["problems"]) <= set(PROBLEMS)


def test_big_photos_are_measured_downscaled() -> None:
    big = _scene(256).resize((1024, 768), Image.Resampling.BICUBIC)
    q = assess(big)
    assert q.measures.short_side == 768
    assert "too small" not in q.problems


def test_flat_and_grayscale_inputs_do_not_crash() -> None:
    q = assess(Image.new("L", (200, 150), 128))
    assert q.problems == ("blurred", "low contrast")
    assert q.measures.sharpness == 0.0 and q.measures.noise == 0.0
