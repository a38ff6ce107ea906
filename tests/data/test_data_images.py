"""load_rgb / load_rgb_bytes / iter_photos on small synthetic files of every awkward kind."""

from __future__ import annotations

import io
import os
import struct
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monkeysee.data.images import (
    MAX_PIXELS,
    decode_bytes,
    display_path,
    iter_photos,
    load_rgb,
    load_rgb_bytes,
    read_header,
)
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
    with Image.open(p) as original:
        expected = np.asarray(original.convert("RGB"))
    im = load_rgb(p)
    p.unlink()
    assert np.array_equal(np.asarray(im), expected)  # fully decoded: no lazy read of a file that is gone


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


def test_iter_photos_reports_a_link_back_to_a_folder_above(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert [p.name for p in iter_photos(tmp_path)] == ["a.jpg", "loop"]  # walked once, then named
    _assert_error(tmp_path / "loop", "symbolic link loop", "folder above")


# --- only photo formats reach a decoder ---


EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
       b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n")


@pytest.fixture
def no_ghostscript(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records every attempt to run Ghostscript (Pillow's EPS plugin would, on load)."""
    from PIL import EpsImagePlugin

    calls: list[object] = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript",
                        lambda *a, **k: calls.append(a) or Image.new("RGB", (1, 1)))
    return calls


def test_postscript_renamed_jpg_never_reaches_ghostscript(tmp_path: Path, no_ghostscript) -> None:
    p = tmp_path / "monkey.jpg"
    p.write_bytes(EPS)
    err = _assert_error(p, "not an accepted photo format", "PostScript")
    assert "JPEG" in err.problem and "convert it to JPEG" in err.fix
    with pytest.raises(ImageError, match=r"upload\.jpg: not an accepted photo format"):
        load_rgb_bytes(EPS, "upload.jpg")
    assert no_ghostscript == []


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "TGA", "PCX"])
def test_formats_pillow_knows_but_a_photo_is_not_are_refused(tmp_path: Path, fmt: str) -> None:
    p = tmp_path / "photo.jpg"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(p, format=fmt)
    assert Image.open(p).format == fmt  # Pillow would decode it
    err = _assert_error(p, "not an accepted photo format", fmt)
    assert "JPEG, PNG" in err.problem


LOSSY = {"JPEG": 2, "PNG": 0, "WEBP": 2, "TIFF": 0, "BMP": 0, "GIF": 0}
"""The largest channel error each format's encoder makes on a flat colour."""


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF"])
def test_photo_formats_are_read(tmp_path: Path, fmt: str) -> None:
    p = tmp_path / "photo"
    Image.new("RGB", (16, 12), (200, 100, 50)).save(p, format=fmt)
    pixels = np.asarray(load_rgb(p)).astype(int)
    assert pixels.shape == (12, 16, 3)
    assert np.abs(pixels - (200, 100, 50)).max() <= LOSSY[fmt]  # the colour, within the format's loss


# --- memory: a decoded-bytes budget, not just a pixel count ---


def _png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header is rewritten to claim `width` x `height`."""
    data = bytearray(_png_bytes(Image.new("L", (1, 1))))
    ihdr = bytearray(data[12:29])
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def test_pixel_limit_message_quotes_our_limit_not_pillows() -> None:
    with pytest.raises(ImageError) as info:
        load_rgb_bytes(_png_claiming(100_000, 100_000), "bomb.png", max_pixels=1_000_000)
    problem = info.value.problem
    assert "10,000,000,000" in problem and "the limit is 1,000,000" in problem
    assert str(2 * Image.MAX_IMAGE_PIXELS) not in problem and "DOS attack" not in problem


def _sixteen_bit_png(size: tuple[int, int]) -> bytes:
    values = (np.arange(size[0] * size[1], dtype=np.uint32) % 65536).astype(np.uint16).reshape(size[::-1])
    return _png_bytes(Image.fromarray(values))


def test_decode_budget_counts_bytes_per_pixel_and_mode() -> None:
    n = 100 * 100
    cases = {  # (mode, format, keyword) -> bytes per pixel: stored + decoder + rotation + conversion
        ("RGB", "JPEG"): 4, ("L", "JPEG"): 1 + 4, ("I;16", "PNG"): 2 + 4, ("RGBA", "PNG"): 4 + 16,
        ("RGB", "WEBP"): 4 + 4, ("RGB", "TIFF"): 4 + 4, ("P", "GIF"): 1 + 4,
    }
    for (mode, fmt), per_pixel in cases.items():
        assert decode_bytes(mode, (100, 100), fmt, rotated=False) == n * per_pixel, (mode, fmt)
    assert decode_bytes("RGB", (100, 100), "JPEG", rotated=True) == n * 8
    assert decode_bytes("RGB", (100, 100), "JPEG", rotated=False, progressive=True) == n * 10
    assert decode_bytes("P", (100, 100), "PNG", rotated=False, transparent=True) == n * 17
    # From real headers: a PNG may carry its orientation after the pixels, so a rotation is counted.
    assert read_header(_sixteen_bit_png((100, 100))).decode_bytes == n * (2 + 2 + 4)
    jpeg = io.BytesIO()
    Image.new("RGB", (100, 100)).save(jpeg, "JPEG")
    header = read_header(jpeg.getvalue())
    assert (header.format, header.mode, header.width, header.decode_bytes) == ("JPEG", "RGB", 100, n * 4)


def test_sixteen_bit_greyscale_over_the_budget_is_refused_before_decoding() -> None:
    data = _sixteen_bit_png((1000, 1000))  # small file, 8 MB to decode
    with pytest.raises(ImageError) as info:
        load_rgb_bytes(data, "deep.png", max_bytes=4 * 1024**2)
    problem = info.value.problem
    assert problem.startswith("image has too many pixels") and "I;16" in problem
    assert "needs about 8 MB" in problem and "the limit is 4 MB" in problem
    assert load_rgb_bytes(data, max_bytes=8 * 1024**2).size == (1000, 1000)


def test_sixteen_bit_conversion_holds_no_full_size_float_copy() -> None:
    data = _sixteen_bit_png((2000, 2000))  # 4 megapixels: float64 copies would be 32 MB each
    tracemalloc.start()
    try:
        out = load_rgb_bytes(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.getpixel((1999, 0)) == (round(1999 / 257),) * 3
    # A few band-sized temporaries, whatever the photo size (the old full-size float64 copies: 32 MB each).
    assert peak < 8 * 1024**2, f"numpy temporaries peaked at {peak / 1024**2:.0f} MB"


def test_rgb_photo_is_not_copied_when_nothing_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = _jpeg(tmp_path / "a.jpg")
    copies: list[str] = []
    real_copy = Image.Image.copy
    monkeypatch.setattr(Image.Image, "copy", lambda self: copies.append(self.mode) or real_copy(self))
    assert load_rgb(p).mode == "RGB" and copies == []


# --- what a folder walk meets besides photos ---


def _load_in_thread(path: Path) -> BaseException | None:
    """load_rgb(path) with a deadline: a FIFO opened for reading would block for ever."""
    result: list[BaseException | None] = []

    def target() -> None:
        try:
            load_rgb(path)
            result.append(None)
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(5)
    assert result, f"load_rgb({path}) blocked"
    return result[0]


def test_walk_yields_links_loops_and_fifos_and_load_rgb_names_them(tmp_path: Path) -> None:
    _jpeg(tmp_path / "a.jpg")
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "gone.jpg")
    (tmp_path / "self.jpg").symlink_to(tmp_path / "self.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    names = [p.name for p in iter_photos(tmp_path)]
    assert names == ["a.jpg", "broken.jpg", "pipe.jpg", "self.jpg"]
    broken = _assert_error(tmp_path / "broken.jpg", "broken link", "gone.jpg")
    assert "link" in broken.fix
    _assert_error(tmp_path / "self.jpg", "symbolic link loop")
    fifo = _load_in_thread(tmp_path / "pipe.jpg")
    assert isinstance(fifo, ImageError) and fifo.fix and str(tmp_path / "pipe.jpg") in fifo.message
    assert "not a regular file (a FIFO)" in fifo.problem and "empty" not in fifo.problem


def test_an_unreadable_subfolder_is_one_error_and_the_walk_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for rel in ("a/1.jpg", "lost+found/x.jpg", "z/2.jpg"):
        _jpeg((tmp_path / rel).parent.mkdir(parents=True, exist_ok=True) or tmp_path / rel)
    locked = tmp_path / "lost+found"
    real_scandir = os.scandir

    def scandir(path=None):  # the tests run as root, who may list anything: refuse as for a user
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = [p.relative_to(tmp_path).as_posix() for p in iter_photos(tmp_path)]
    assert found == ["a/1.jpg", "lost+found", "z/2.jpg"]
    err = _assert_error(locked, "cannot list folder: permission denied")
    assert "permission" in err.fix
    _assert_error(tmp_path / "a", "is a folder")  # a folder that can be listed is still not a photo


def test_file_names_that_are_not_utf8_can_be_printed(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9.jpg"  # Latin-1 name from another system
    Path(os.fsdecode(raw)).write_text("not a photo")
    assert display_path(raw) == display_path(os.fsdecode(raw)) == display_path(tmp_path) + "/caf\\xe9.jpg"
    for given in (raw, os.fsdecode(raw), Path(os.fsdecode(raw))):
        with pytest.raises(ImageError) as info:
            load_rgb(given)
        message = info.value.message
        message.encode("utf-8")  # printable and JSON-safe: no lone surrogates
        assert "caf\\xe9.jpg: not an image" in message
    (found,) = iter_photos(os.fsencode(tmp_path))
    assert os.fsencode(found) == raw
