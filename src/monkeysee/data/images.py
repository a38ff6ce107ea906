"""Reading photos: the formats a photo can be, recognised by content, always returned as 8-bit RGB.

Every failure becomes an `ImageError` that names the file, says what is wrong and how to fix it,
so a bad photo in a folder of thousands never surfaces as a bare Pillow traceback. Only photo formats
are decoded (`PHOTO_FORMATS`): a PostScript file renamed .jpg never reaches Pillow's EPS plugin, which
would run Ghostscript on it. Before any pixel is decoded, the photo's pixel count and the memory its
decoding will take (`decode_bytes`: its mode's bytes per pixel, the decoder's buffers and every
conversion on the way to RGB) and its shape are checked against limits, so a small file cannot take
gigabytes. The limits are the same in every command and in the server.

A caller that knows which model the photo is for passes its `preprocess`: a photo at least twice the
size the model's eval transform resizes to (`Preprocess.resize_size`, on the short side) is then returned
already resized as that transform resizes it (same size, same filter), so the transform's own resize
leaves it as it is and nothing downstream holds more pixels than the model needs. A JPEG is first scaled
by 1/2, 1/4 or 1/8 inside the decoder (`Image.draft`), keeping at least twice the resize size, so its
full-size pixels never exist; the only difference from a full decode is that scaling.
"""

from __future__ import annotations

import io
import os
import re
import stat
import threading
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from monkeysee.data.folders import FIX_REPLACE, as_path, check_regular_file, display_path
from monkeysee.data.folders import is_sidecar as is_sidecar  # re-exported: photos and folders from one module
from monkeysee.data.folders import iter_photos as iter_photos
from monkeysee.data.preprocess import Preprocess
from monkeysee.errors import ImageError

MAX_PIXELS: int = 50_000_000
"""Largest photo accepted, in pixels, by every command and by default by the server (phones save 12 to
50 megapixels unless set to a special high-resolution mode)."""

MAX_ASPECT: float = 20.0
"""Longest side over shortest side accepted, by every command and by the server. Beyond it, resizing the
short side to the model's input makes the long side explode in memory (an 8000x1 strip would become
2,048,000x256 pixels), and nothing recognisable is left in the centre crop anyway."""

MAX_DECODE_BYTES: int = 1024**3
"""Most memory one photo may take to decode and convert to RGB, by default (see `decode_bytes`)."""

PHOTO_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF")
"""The Pillow plugins allowed to open a file. Phone JPEGs that Pillow calls MPO come through the JPEG
plugin; TIFF (cameras, scanners), BMP and GIF are photo containers too. Everything else (EPS, PDF,
PSD, ICO and two dozen rarer formats) is refused before any decoder runs."""

ACCEPTED = "JPEG, PNG, WebP, TIFF, BMP or GIF"

# `warnings.catch_warnings` swaps process-wide state; serialise our use of it across loader threads.
_OPEN_LOCK = threading.Lock()

_BAND_PIXELS = 1 << 18  # high-depth photos are scaled to 8 bits this many pixels at a time

# First bytes of files people mistake for photos, so the error can say what the file is.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%!PS", "a PostScript/EPS document"),
    (b"\xc5\xd0\xd3\xc6", "a PostScript/EPS document"),
    (b"%PDF", "a PDF document"),
    (b"<svg", "an SVG drawing"),
)
_FTYP_BRANDS = {b"heic": "a HEIC photo", b"heix": "a HEIC photo", b"mif1": "a HEIF photo",
                b"avif": "an AVIF photo"}


@dataclass(frozen=True)
class _Limits:
    max_pixels: int
    max_bytes: int
    max_aspect: float
    preprocess: Preprocess | None  # the model's: decode at the size it needs; None: at full size


@dataclass(frozen=True)
class PhotoHeader:
    """What a photo's header says, read without decoding its pixels."""

    format: str
    mode: str
    width: int
    height: int
    decode_bytes: int  # estimated peak memory to decode it and convert it to RGB (see `decode_bytes`)
    scale: int = 1  # the JPEG decoder's reduction for the `preprocess` asked for (1: full size)
    upright: tuple[int, int] = (0, 0)  # the photo's own size, turned as EXIF orientation turns it
    output: tuple[int, int] = (0, 0)  # the size `load_rgb_bytes` returns it at, with the same `preprocess`


def load_rgb(path: str | bytes | os.PathLike, max_pixels: int = MAX_PIXELS,
             max_bytes: int = MAX_DECODE_BYTES, *, max_aspect: float = MAX_ASPECT,
             preprocess: Preprocess | None = None) -> Image.Image:
    """Decode the photo at `path` and return it upright, as 8-bit RGB; with the model's `preprocess`, no
    larger than that model needs (see the module docstring).

    The format is recognised from the bytes, not the file name. EXIF orientation is applied,
    transparency is composited on white and 16-bit greyscale is scaled down (not clipped). Broken
    links, link loops, FIFOs, devices and folders are named as such; a FIFO is never opened.
    """
    path = as_path(path)
    shown = display_path(path)
    check_regular_file(path, shown)
    try:
        # O_NONBLOCK: should the path have become a FIFO since the check, opening it must not hang.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except PermissionError:
        raise ImageError("cannot read the file (permission denied)", fix="check its permissions",
                         path=shown) from None
    except OSError as exc:
        raise ImageError(f"cannot read the file ({exc.strerror})", fix="check its permissions",
                         path=shown) from None
    with os.fdopen(fd, "rb") as fp:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImageError("not a regular file", fix="photos must be ordinary files", path=shown)
        try:
            return _decode(fp, shown, _Limits(max_pixels, max_bytes, max_aspect, preprocess))
        except IsADirectoryError:
            raise ImageError("is a folder, not a photo", fix="pass the path of a photo file",
                             path=shown) from None


def load_rgb_bytes(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS,
                   max_bytes: int = MAX_DECODE_BYTES, *, max_aspect: float = MAX_ASPECT,
                   preprocess: Preprocess | None = None) -> Image.Image:
    """`load_rgb` for photos that arrive in memory (web uploads); `name` is used in error messages."""
    if not data:
        raise ImageError("upload is empty (0 bytes)", fix="send the photo file itself", path=name)
    return _decode(io.BytesIO(data), name, _Limits(max_pixels, max_bytes, max_aspect, preprocess))


def read_header(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS,
                max_bytes: int = MAX_DECODE_BYTES, *, max_aspect: float = MAX_ASPECT,
                preprocess: Preprocess | None = None) -> PhotoHeader:
    """Check an upload's format and limits from its header alone; raises the ImageError that
    `load_rgb_bytes` would raise for them. A server uses it to reserve memory before decoding; its
    `decode_bytes` holds for `load_rgb_bytes` called with the same `preprocess`."""
    if not data:
        raise ImageError("upload is empty (0 bytes)", fix="send the photo file itself", path=name)
    im, size, scale = _open(io.BytesIO(data), name, _Limits(max_pixels, max_bytes, max_aspect, preprocess))
    turned = _orientation(im) in {5, 6, 7, 8}
    upright = (size[1], size[0]) if turned else size
    decoded = (-(-upright[0] // scale), -(-upright[1] // scale))
    return PhotoHeader(im.format or "", im.mode, *size, _cost(im, size, scale), scale, upright,
                       _fitted_size(decoded, preprocess))


def _decode(fp: BinaryIO, where: str, limits: _Limits) -> Image.Image:
    """Open, check the limits, decode, orient, convert and fit; every Pillow failure becomes ImageError."""
    im, _, _ = _open(fp, where, limits)
    try:
        im.load()
    except MemoryError:
        raise ImageError(
            "not enough memory to decode this photo", fix="use a smaller photo", path=where
        ) from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error... on bad data
        raise _corrupt(exc, where) from None
    try:
        return _fitted(_to_rgb(_upright(im)), limits.preprocess)
    except MemoryError:
        raise ImageError(
            "not enough memory to decode this photo", fix="use a smaller photo", path=where
        ) from None
    except Exception as exc:
        raise ImageError(
            f"cannot convert colour mode {im.mode!r} to RGB ({exc})",
            fix="re-save the photo as an ordinary RGB JPEG or PNG",
            path=where,
        ) from None


def _open(fp: BinaryIO, where: str, limits: _Limits) -> tuple[Image.Image, tuple[int, int], int]:
    """Read the header with an allowed plugin, check the pixel, shape and memory limits and set the JPEG
    decoder's scale (no decoding). Returns the image, its size in the file and that scale."""
    try:
        # Our own size check below enforces `max_pixels`; Pillow's warning would only duplicate it.
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp, formats=PHOTO_FORMATS)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found[1]):,}" if found else "over Pillow's hard limit"
        raise _too_many_pixels(where, size, limits.max_pixels) from None
    except UnidentifiedImageError:
        raise _unidentified(fp, where) from None
    except Exception as exc:
        raise _corrupt(exc, where) from None
    width, height = im.size
    if width * height > limits.max_pixels:
        raise _too_many_pixels(where, f"{width}x{height} = {width * height:,}", limits.max_pixels)
    if max(width, height) > limits.max_aspect * min(width, height):
        raise ImageError(
            f"image is too long and thin to classify ({width}x{height} pixels; the longest side may be "
            f"at most {limits.max_aspect:g} times the shortest)",
            fix=f"crop it to a shape no longer than {limits.max_aspect:g}:1, or delete it", path=where,
        )
    scale = _draft(im, 2 * limits.preprocess.resize_size if limits.preprocess else None)
    need = _cost(im, (width, height), scale)
    if need > limits.max_bytes:
        raise ImageError(
            f"image has too many pixels for its kind ({width}x{height} {im.format} in colour mode "
            f"{im.mode} needs about {_mb(need)} to decode; the limit is {_mb(limits.max_bytes)})",
            fix="resize the photo (a few megapixels is plenty) or save it as an 8-bit JPEG",
            path=where,
        )
    return im, (width, height), scale


def _draft(im: Image.Image, min_side: int | None) -> int:
    """Have a JPEG decoded at 1/2, 1/4 or 1/8 scale, the smallest that keeps its short side at least
    `min_side`; the scale set (1 for other formats, which ignore `draft`, and when no reduction fits)."""
    if not min_side or min(im.size) // min_side < 2:
        return 1
    width = im.width
    # Pillow picks the largest of 8, 4, 2, 1 not above min(width // min_side, height // min_side), and
    # answers the box of the file's pixels at the new scale.
    drafted = im.draft(None, (min_side, min_side))
    return 1 if drafted is None else round(width / drafted[1][2])


def _fitted(im: Image.Image, pre: Preprocess | None) -> Image.Image:
    """`im` resized as `pre`'s eval transform resizes it (short side to `resize_size`, the long side by
    torchvision's arithmetic, `pre.interpolation`) when its short side is at least twice that; else `im`."""
    size = _fitted_size(im.size, pre)
    if pre is None or size == im.size:
        return im
    return im.resize(size, Image.Resampling[pre.interpolation.upper()])


def _fitted_size(size: tuple[int, int], pre: Preprocess | None) -> tuple[int, int]:
    """The size `_fitted` gives a photo of `size`."""
    if pre is None or min(size) < 2 * pre.resize_size:
        return size
    return pre.resized(size)


def _mb(n: int) -> str:
    return f"{n / 1024**2:,.0f} MB"


def _too_many_pixels(where: str, size: str, max_pixels: int) -> ImageError:
    hard = Image.MAX_IMAGE_PIXELS
    limit = max_pixels if hard is None else min(max_pixels, 2 * hard)  # beyond 2x, Pillow refuses first
    return ImageError(
        f"image has too many pixels ({size}; the limit is {limit:,}), possibly a decompression bomb",
        fix="resize the photo (a few megapixels is plenty) or raise max_pixels if you trust it",
        path=where,
    )


def _corrupt(exc: Exception, where: str) -> ImageError:
    return ImageError(
        f"truncated or corrupt image data ({type(exc).__name__}: {exc})",
        fix="re-export or re-download the photo, or delete it",
        path=where,
    )


def _unidentified(fp: BinaryIO, where: str) -> ImageError:
    """Say what the file is when it is a known non-photo format, else that it is not an image."""
    kind = _identify(fp)
    if kind is not None:
        return ImageError(f"not an accepted photo format: {kind} (accepted: {ACCEPTED})",
                          fix="export or convert it to JPEG or PNG", path=where)
    return ImageError("not an image, or a format Pillow does not recognise", fix=FIX_REPLACE, path=where)


def _identify(fp: BinaryIO) -> str | None:
    """What a file that no photo plugin opens is, if anything: by its first bytes, else by the header
    parsers of Pillow's other plugins (EPS excluded). Nothing is decoded."""
    fp.seek(0)
    head = fp.read(32)
    kind = next((name for magic, name in _SIGNATURES if head.lstrip().startswith(magic)), None)
    if kind is None and head[4:8] == b"ftyp":
        kind = _FTYP_BRANDS.get(head[8:12])
    if kind is not None:
        return kind
    Image.init()
    others = [f for f in Image.OPEN if f not in PHOTO_FORMATS and f != "EPS"]
    fp.seek(0)
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(fp, formats=others) as im:
                return f"{im.format} ({im.format_description})" if im.format_description else im.format
    except Exception:
        return None


# --- memory: how much decoding a photo takes, from its header ------------------------------------------

_HIGH_DEPTH = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_ALPHA = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def stored_bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow keeps per pixel in memory for `mode` (RGB takes 4: Pillow pads it)."""
    if mode in {"1", "L", "P"}:
        return 1
    return 2 if mode.startswith("I;16") else 4


def decode_bytes(mode: str, size: tuple[int, int], fmt: str = "", *, rotated: bool = True,
                 progressive: bool = False, transparent: bool = False, scale: int = 1) -> int:
    """Estimated peak memory, in bytes, to decode a photo and turn it into 8-bit RGB with `load_rgb`.

    The sum of: the decoded pixels at Pillow's size for `mode`; the decoder's own full-size buffer
    (libwebp decodes into one, libtiff may read the whole image as one strip, a progressive JPEG keeps
    every coefficient: 2 bytes per pixel and component); a rotated copy when EXIF asks for one; and the
    conversion to RGB (nothing for RGB, 4 bytes per pixel for the RGB result, 16 when transparency is
    composited on white). An upper bound: not every term is alive at the same moment.

    `size` is the photo's size in the file; `scale` the JPEG decoder's reduction (`Image.draft`): its
    pixels are decoded at 1/scale per side, but a progressive JPEG's coefficients stay full size.
    """
    pixels = -(-size[0] // scale) * -(-size[1] // scale)
    coefficients = 0
    stored = stored_bytes_per_pixel(mode)
    per_pixel = stored
    if fmt == "WEBP":
        per_pixel += 4
    elif fmt == "TIFF":
        per_pixel += stored
    elif fmt in {"JPEG", "MPO"} and progressive:
        coefficients = size[0] * size[1] * 2 * (Image.getmodebands(mode) if mode in Image.MODES else 4)
    if rotated:
        per_pixel += stored
    if mode in _ALPHA or transparent:
        per_pixel += 16
    elif mode != "RGB":
        per_pixel += 4
    return pixels * per_pixel + coefficients


def _cost(im: Image.Image, size: tuple[int, int], scale: int) -> int:
    return decode_bytes(im.mode, size, im.format or "", rotated=_orientation(im) != 1,
                        progressive=bool(im.info.get("progressive") or im.info.get("progression")),
                        transparent="transparency" in im.info, scale=scale)


def _orientation(im: Image.Image) -> int | None:
    """The EXIF orientation known before decoding; None when it may only appear with the pixels (a PNG
    can carry its EXIF after the image data, and Pillow reads that only at load)."""
    if im.format == "PNG" and "exif" not in im.info:
        return None
    try:
        value = int(im.getexif().get(0x0112, 1))
    except Exception:
        return 1
    return value if 2 <= value <= 8 else 1


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (no copy when there is none); a broken EXIF block is not worth losing
    the photo over."""
    try:
        if 2 <= int(im.getexif().get(0x0112, 1)) <= 8:
            return ImageOps.exif_transpose(im) or im
    except Exception:
        pass
    return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, compositing transparency on white; an RGB photo is returned as is."""
    if im.mode in _HIGH_DEPTH:
        return _high_depth_to_rgb(im)
    if im.mode in _ALPHA or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def _high_depth_to_rgb(im: Image.Image) -> Image.Image:
    """16-bit (and 32-bit int) greyscale is taken as 0..65535, float as 0..1; scaled to 0..255.

    Done in bands of rows straight into the RGB result, so the only full-size copy is the result:
    the float64 arithmetic never holds more than `_BAND_PIXELS` pixels at once.
    """
    width, height = im.size
    rows = max(1, _BAND_PIXELS // max(width, 1))
    bands = [(y, min(y + rows, height)) for y in range(0, height, rows)]

    def band(y0: int, y1: int) -> np.ndarray:
        return np.asarray(im.crop((0, y0, width, y1)), dtype=np.float64)

    top = 0.0
    if im.mode == "F":
        peak = max((float(np.nanmax(band(*b), initial=-np.inf)) for b in bands), default=0.0)
        top = 1.0 if peak <= 1.0 else 255.0
    out = Image.new("RGB", im.size)
    for y0, y1 in bands:
        values = band(y0, y1)  # in place from here on: one band-sized float array at a time
        if top:
            values /= top
            values *= 255.0
        else:
            values /= 257.0  # 65535 / 255: maps 0 -> 0 and 65535 -> 255 exactly
        np.nan_to_num(values, copy=False)
        np.clip(np.rint(values, out=values), 0, 255, out=values)
        out.paste(Image.fromarray(values.astype(np.uint8), mode="L"), (0, y0))
    return out
