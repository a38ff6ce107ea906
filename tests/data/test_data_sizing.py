"""Photo shape limits and decoding at the size the model needs: long thin strips are refused in every
reading path, large photos are decoded at the size the model needs (JPEG draft, then its eval resize)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monkeysee.cli import main
from monkeysee.data.dataset import decoded_batches
from monkeysee.data.images import decode_bytes, load_rgb, load_rgb_bytes, read_header
from monkeysee.data.layout import scan_dataset
from monkeysee.data.transforms import eval_transform
from monkeysee.errors import ImageError
from monkeysee.models.registry import Preprocess
from monkeysee.predict import Predictor
from tests.conftest import COLOURS, synthetic_photo

PRE = Preprocess(input_size=224)  # resize_size 256: the short side the eval transform resizes to


def _strip(path: Path, size: tuple[int, int]) -> Path:
    Image.new("L", size, 128).save(path, "PNG")
    return path


def _quartered(size: tuple[int, int]) -> Image.Image:
    """Blue, with the top-left quarter red: tells every rotation and flip apart."""
    im = Image.new("RGB", size, (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, size[0] // 2, size[1] // 2))
    return im


def _jpeg_bytes(im: Image.Image, orientation: int = 1, progressive: bool = False) -> bytes:
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, exif=exif, progressive=progressive)
    return buf.getvalue()


# --- shape limits: the same as the server's, in every command ---


@pytest.mark.parametrize("size", [(8000, 1), (20000, 1), (1, 8000), (201, 10)])
def test_long_thin_photos_are_refused_from_the_header(tmp_path: Path, size: tuple[int, int]) -> None:
    path = _strip(tmp_path / "strip.png", size)
    w, h = size
    expected = (f"image is too long and thin to classify ({w}x{h} pixels; the longest side may be at most "
                "20 times the shortest)")
    with pytest.raises(ImageError) as info:
        load_rgb(path)
    assert info.value.problem == expected and info.value.path == str(path)
    assert info.value.fix == "crop it to a shape no longer than 20:1, or delete it"
    with pytest.raises(ImageError) as info:
        read_header(path.read_bytes(), "strip.png")  # nothing decoded: the header alone decides
    assert info.value.problem == expected


def test_twenty_to_one_is_accepted_and_the_limit_can_be_widened(tmp_path: Path) -> None:
    assert load_rgb(_strip(tmp_path / "a.png", (200, 10))).size == (200, 10)
    assert load_rgb(_strip(tmp_path / "b.png", (201, 10)), max_aspect=21).size == (201, 10)


def test_scan_skips_a_long_thin_photo_with_its_reason(make_dataset) -> None:
    root = make_dataset({"a": 5, "b": 5})
    _strip(root / "a" / "strip.png", (8000, 1))
    index = scan_dataset(root, workers=2)
    assert [(s.path.relative_to(root).as_posix(), s.reason) for s in index.skipped] == [
        ("a/strip.png", "image is too long and thin to classify (8000x1 pixels; the longest side may be "
                        "at most 20 times the shortest)"),
    ]
    assert all(s.path.name != "strip.png" for s in index.train + index.val + index.test)


def test_decoded_batches_go_on_past_long_thin_photos(tmp_path: Path, photo) -> None:
    paths = [photo(tmp_path / "a.jpg"), _strip(tmp_path / "b.png", (8000, 1)),
             _strip(tmp_path / "c.png", (20000, 1)), photo(tmp_path / "d.jpg")]
    batches = list(decoded_batches(paths, batch_size=3, workers=2))
    items = [item for batch in batches for item in batch]
    assert [len(b) for b in batches] == [3, 1] and [src for src, _ in items] == [str(p) for p in paths]
    assert [isinstance(im, Image.Image) for _, im in items] == [True, False, False, True]
    assert items[1][1].startswith(f"{paths[1]}: image is too long and thin") and "Fix: crop it" in items[1][1]


def test_predict_batch_finishes_with_error_rows_for_strips(tiny_run: Path, synthetic_data: Path, tmp_path,
                                                          capsys) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    red, green = (shutil.copy(synthetic_data / "training" / label / f"{label}_00.jpg", folder / f"{name}.jpg")
                  for label, name in (("n0", "a_red"), ("n1", "d_green")))
    _strip(folder / "b_strip.png", (8000, 1))
    _strip(folder / "c_strip.png", (20000, 1))
    assert main(["predict", str(tiny_run), str(folder), "--json", "--unknown-threshold", "1e9"]) == 0
    rows = {Path(r["source"]).name: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert [rows[n].get("species") for n in sorted(rows)] == ["red monkey", None, None, "green monkey"]
    for name, size in (("b_strip.png", "8000x1"), ("c_strip.png", "20000x1")):
        assert rows[name]["error"].startswith(f"{folder / name}: image is too long and thin to classify "
                                              f"({size} pixels")
    alone = Predictor.from_run_dir(tiny_run).predict_images([load_rgb(red), load_rgb(green)], top_k=3)
    assert [rows["a_red.jpg"]["probability"], rows["d_green.jpg"]["probability"]] == [
        round(p.top[0].probability, 6) for p in alone]


# --- decoding at the size the model needs ---


def _eval(im: Image.Image) -> torch.Tensor:
    return eval_transform(PRE)(im)


def test_a_12_megapixel_jpeg_is_drafted_at_a_quarter_then_resized_as_the_model_resizes() -> None:
    data = _jpeg_bytes(_quartered((4000, 3000)))
    header = read_header(data, preprocess=PRE)  # 3000 // 512 = 5: the decoder scales by 1/4
    assert (header.width, header.height, header.scale, header.decode_bytes) == (4000, 3000, 4, 1000 * 750 * 4)
    assert read_header(data).decode_bytes == 4000 * 3000 * 4
    assert load_rgb_bytes(data, preprocess=PRE).size == (341, 256)  # torchvision's Resize(256) size
    big = Preprocess(input_size=512)  # resizes to 585: 3000 // 1170 = 2, so the decoder scales by 1/2
    assert read_header(data, preprocess=big).scale == 2
    assert load_rgb_bytes(data, preprocess=big).size == (780, 585)
    assert load_rgb_bytes(data).size == (4000, 3000)


def test_a_drafted_jpeg_gives_nearly_the_models_input_of_a_full_decode() -> None:
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    data = _jpeg_bytes(small.resize((2400, 1800), Image.Resampling.BICUBIC))  # drafted at 1/2
    assert read_header(data, preprocess=PRE).scale == 2
    sized, full = _eval(load_rgb_bytes(data, preprocess=PRE)), _eval(load_rgb_bytes(data))
    assert sized.shape == full.shape == (3, 224, 224)
    assert (sized - full).abs().mean() < 0.01  # in normalised units (2 = black to white)


@pytest.mark.parametrize("fmt, size, resized", [
    ("PNG", (4000, 3000), (341, 256)), ("PNG", (513, 700), (256, 349)), ("JPEG", (1023, 700), (374, 256)),
    ("JPEG", (511, 700), (511, 700)), ("JPEG", (100, 80), (100, 80)),  # under twice 256: as decoded
])
def test_the_model_input_is_exactly_that_of_a_full_decode_unless_drafted(fmt: str, size, resized) -> None:
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, fmt)
    full, sized = load_rgb_bytes(buf.getvalue()), load_rgb_bytes(buf.getvalue(), preprocess=PRE)
    assert read_header(buf.getvalue(), preprocess=PRE).scale == 1 and sized.size == resized
    assert torch.equal(_eval(full), _eval(sized))


@pytest.mark.parametrize("orientation, size, red_corner", [
    (1, (341, 256), (0, 0)), (3, (341, 256), (340, 255)),  # as stored; turned half a turn
    (6, (256, 341), (255, 0)), (8, (256, 341), (0, 340)),  # turned a quarter clockwise; anticlockwise
])
def test_a_drafted_jpeg_is_turned_upright(orientation: int, size: tuple[int, int],
                                          red_corner: tuple[int, int]) -> None:
    data = _jpeg_bytes(_quartered((4000, 3000)), orientation)
    sized = load_rgb_bytes(data, preprocess=PRE)
    assert sized.size == size
    full = load_rgb_bytes(data)
    assert full.size == (4000, 3000) if size[0] > size[1] else (3000, 4000)
    for im, (x, y) in ((sized, red_corner), (full, (red_corner[0] * full.width // size[0],
                                                    red_corner[1] * full.height // size[1]))):
        r, g, b = im.getpixel((x, y))  # type: ignore[misc]
        assert r > 240 and g < 15 and b < 15


def test_a_progressive_jpeg_keeps_its_full_size_coefficients_in_the_estimate() -> None:
    data = _jpeg_bytes(_quartered((4000, 3000)), progressive=True)
    assert read_header(data, preprocess=PRE).decode_bytes == 1000 * 750 * 4 + 4000 * 3000 * 2 * 3
    assert decode_bytes("RGB", (4001, 3001), "JPEG", rotated=False, scale=8) == 501 * 376 * 4
    assert load_rgb_bytes(data, preprocess=PRE).size == (341, 256)


def test_predict_decodes_large_photos_at_the_size_the_model_needs(tiny_run: Path, tmp_path: Path) -> None:
    """Same answers as for the photo decoded in full, to the limits of the JPEG decoder's scaling."""
    predictor = Predictor.from_run_dir(tiny_run, precision="fp32")
    photo = synthetic_photo(COLOURS["n2"], seed=3).resize((2048, 2048), Image.Resampling.BICUBIC)
    path = tmp_path / "big.jpg"
    photo.save(path, quality=92)
    (row,) = predictor.predict_paths([path])
    (full,) = predictor.predict_images([load_rgb(path)], sources=[str(path)])
    assert row.best is not None and full.best is not None and row.best.species.label == "n2"
    assert abs(row.best.probability - full.best.probability) < 0.01
