"""load_rgb / load_rgb_bytes / iter_photos on small synthetic files of every awkward kind."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monkeysee.data.images import MAX_PIXELS, iter_photos, load_rgb, load_rgb_bytes
from monkeysee.errors import DataError, ImageError


def _png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, "JPEG")
    return path


# --- bad input: every failure is an ImageError that names the file and says what is wrong ---


def _assert_error(path: Path | str, *words: str, max_pixels: int = MAX_PIXELS) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_rgb(path, max_pixels=max_pixels)
    err = info.value
    assert str(path) in err.message
    assert err.fix, "every error must say how to fix it"
    for word in words:
        assert word in err.problem
    return err


def test_zero_byte_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    _assert_error(p, "empty", "0 bytes")


def test_text_named_jpg(tmp_path: Path) -> None:
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a photo\n")
    _assert_error(p, "not an image")


def test_truncated_jpeg(tmp_path: Path) -> None:
    p = _jpeg(tmp_path / "cut.jpg")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _assert_error(p, "truncated or corrupt")


def test_png_header_with_garbage_body(tmp_path: Path) -> None:
    p = tmp_path / "garbage.png"
    p.write_bytes(_png_bytes(Image.new("RGB", (8, 8)))[:33] + b"\x00garbage" * 20)
    _assert_error(p, "truncated or corrupt")


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    p = _jpeg(tmp_path / "big.jpg", (20, 10))
    err = _assert_error(p, "too many pixels", "20x10 = 200", max_pixels=199)
    assert "max_pixels" in err.fix
    assert load_rgb(p, max_pixels=200).size == (20, 10)


def test_pillow_bomb_error_becomes_image_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _jpeg(tmp_path / "huge.jpg", (20, 10))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # Pillow raises its own error above 2x its limit
    _assert_error(p, "too many pixels")


def test_missing_file(tmp_path: Path) -> None:
    _assert_error(tmp_path / "nope.jpg", "not found")


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "folder.jpg").mkdir()
    _assert_error(tmp_path / "folder.jpg", "folder")


def test_bytes_errors_name_the_upload() -> None:
    with pytest.raises(ImageError, match=r"holiday\.jpg: upload is empty"):
        load_rgb_bytes(b"", name="holiday.jpg")
    with pytest.raises(ImageError, match=r"holiday\.jpg: not an image"):
        load_rgb_bytes(b"GIF89a but not really", name="holiday.jpg")
    with pytest.raises(ImageError, match="upload: image has too many pixels"):
        load_rgb_bytes(_png_bytes(Image.new("RGB", (10, 10))), max_pixels=99)


# --- colour modes all become 8-bit RGB, with the right values ---


def _roundtrip(tmp_path: Path, im: Image.Image, fmt: str = "PNG", name: str = "x") -> Image.Image:
    p = tmp_path / name
    im.save(p, format=fmt)
    out = load_rgb(p)
    assert out.mode == "RGB"
    return out


def test_grayscale(tmp_path: Path) -> None:
    assert _roundtrip(tmp_path, Image.new("L", (3, 2), 77)).getpixel((0, 0)) == (77, 77, 77)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    im = Image.new("CMYK", (8, 8), (255, 0, 0, 0))  # pure cyan ink
    assert _roundtrip(tmp_path, im, "JPEG").getpixel((4, 4)) == (0, 255, 255)


def test_palette_with_transparency_composites_on_white(tmp_path: Path) -> None:
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 red, index 1 blue
    im.putpixel((1, 0), 1)
    im.info["transparency"] = 0  # red is see-through
    out = _roundtrip(tmp_path, im)
    assert [out.getpixel((0, 0)), out.getpixel((1, 0))] == [(255, 255, 255), (0, 0, 255)]


def test_rgba_and_la_composite_on_white(tmp_path: Path) -> None:
    # alpha 128/255 over white: 0 -> 127, 255 -> 255
    assert _roundtrip(tmp_path, Image.new("RGBA", (2, 2), (255, 0, 0, 128))).getpixel((1, 1)) == (
        255,
        127,
        127,
    )
    assert _roundtrip(tmp_path, Image.new("LA", (2, 2), (0, 128)), name="la").getpixel((0, 0)) == (127,) * 3
    assert (
        _roundtrip(tmp_path, Image.new("RGBA", (2, 2), (9, 9, 9, 0)), name="clear").getpixel((0, 0))
        == (255,) * 3
    )


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 25700, 65535]], dtype=np.uint16)
    im = Image.fromarray(values)
    assert im.mode == "I;16"
    out = _roundtrip(tmp_path, im)
    assert [out.getpixel((x, 0))[0] for x in range(4)] == [0, 4, 100, 255]  # v / 257, rounded
    assert load_rgb_bytes(_png_bytes(im)).getpixel((2, 0)) == (100, 100, 100)


def test_32_bit_int_greyscale_is_taken_as_16_bit_range(tmp_path: Path) -> None:
    im = Image.fromarray(np.array([[25700, 70000]], dtype=np.int32), mode="I")
    out = _roundtrip(tmp_path, im, "TIFF", "i32.tif")
    assert [out.getpixel((x, 0))[0] for x in range(2)] == [100, 255]


def test_exif_orientation_6_is_applied(tmp_path: Path) -> None:
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))  # stored: left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    p = tmp_path / "rotated.jpg"
    im.save(p, "JPEG", exif=exif, quality=95)
    out = load_rgb(p)
    assert out.size == (20, 40)
    top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # left half went to the top


def test_format_is_recognised_by_content_not_name(tmp_path: Path) -> None:
    jpeg_without_extension = _jpeg(tmp_path / "n9151jpg", (58, 41))
    png_named_jpg = tmp_path / "n9160.jpg"
    Image.new("RGB", (45, 33), (1, 2, 3)).save(png_named_jpg, format="PNG")
    assert load_rgb(jpeg_without_extension).size == (58, 41)
    assert load_rgb(png_named_jpg).getpixel((0, 0)) == (1, 2, 3)


def test_result_is_independent_of_the_file(tmp_path: Path) -> None:
    p = _jpeg(tmp_path / "a.jpg")
    im = load_rgb(p)
    p.unlink()
    assert im.copy().size == (64, 48)  # fully decoded: no lazy read of a file that is gone


# --- iter_photos ---


def test_iter_photos_sorted_recursive_skips_hidden(tmp_path: Path) -> None:
    for rel in [
        "b.jpg",
        "a",
        "sub/z.png",
        "sub/deeper/c.txt",
        "c.JPG",
        ".DS_Store",
        "._a.jpg",
        ".hidden/x.jpg",
        "sub/.secret.jpg",
        "Thumbs.db",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = iter_photos(tmp_path)
    assert isinstance(found, Iterator)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a",
        "b.jpg",
        "c.JPG",
        "sub/deeper/c.txt",
        "sub/z.png",
    ]


def test_iter_photos_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="folder not found"):
        list(iter_photos(tmp_path / "missing"))


def test_iter_photos_survives_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert [p.name for p in iter_photos(tmp_path)] == ["a.jpg"]
