"""Reading photos: the formats a photo can be, recognised by content, always returned as 8-bit RGB.

Every failure becomes an `ImageError` that names the file, says what is wrong and how to fix it,
so a bad photo in a folder of thousands never surfaces as a bare Pillow traceback. Only photo formats
are decoded (`PHOTO_FORMATS`): a PostScript file renamed .jpg never reaches Pillow's EPS plugin, which
would run Ghostscript on it. Before any pixel is decoded, the photo's pixel count and the memory its
decoding will take (`decode_bytes`: its mode's bytes per pixel, the decoder's buffers and every
conversion on the way to RGB) are checked against limits, so a small file cannot take gigabytes.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from monkeysee.data.folders import as_path, display_path
from monkeysee.data.folders import is_sidecar as is_sidecar  # re-exported: photos and folders from one module
from monkeysee.data.folders import iter_photos as iter_photos
from monkeysee.errors import ImageError

MAX_PIXELS: int = 89_478_485
"""Largest photo accepted by default (Pillow's own decompression-bomb default: about 9,459 x 9,459)."""

MAX_DECODE_BYTES: int = 1024**3
"""Most memory one photo may take to decode and convert to RGB, by default (see `decode_bytes`)."""

PHOTO_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF")
"""The Pillow plugins allowed to open a file. Phone JPEGs that Pillow calls MPO come through the JPEG
plugin; TIFF (cameras, scanners), BMP and GIF are photo containers too. Everything else (EPS, PDF,
PSD, ICO and two dozen rarer formats) is refused before any decoder runs."""

ACCEPTED = "JPEG, PNG, WebP, TIFF, BMP or GIF"

# `warnings.catch_warnings` swaps process-wide state; serialise our use of it across loader threads.
_OPEN_LOCK = threading.Lock()

_FIX_REPLACE = "replace it with a JPEG or PNG photo, or delete it"
_FIX_LINK = "fix the link or delete it"
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
class PhotoHeader:
    """What a photo's header says, read without decoding its pixels."""

    format: str
    mode: str
    width: int
    height: int
    decode_bytes: int  # estimated peak memory to decode it and convert it to RGB (see `decode_bytes`)


def load_rgb(path: str | bytes | os.PathLike, max_pixels: int = MAX_PIXELS,
             max_bytes: int = MAX_DECODE_BYTES) -> Image.Image:
    """Decode the photo at `path` completely and return it upright, as 8-bit RGB.

    The format is recognised from the bytes, not the file name. EXIF orientation is applied,
    transparency is composited on white and 16-bit greyscale is scaled down (not clipped). Broken
    links, link loops, FIFOs, devices and folders are named as such; a FIFO is never opened.
    """
    path = as_path(path)
    shown = display_path(path)
    _check_regular_file(path, shown)
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
            return _decode(fp, shown, max_pixels, max_bytes)
        except IsADirectoryError:
            raise ImageError("is a folder, not a photo", fix="pass the path of a photo file",
                             path=shown) from None


def load_rgb_bytes(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS,
                   max_bytes: int = MAX_DECODE_BYTES) -> Image.Image:
    """`load_rgb` for photos that arrive in memory (web uploads); `name` is used in error messages."""
    if not data:
        raise ImageError("upload is empty (0 bytes)", fix="send the photo file itself", path=name)
    return _decode(io.BytesIO(data), name, max_pixels, max_bytes)


def read_header(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS,
                max_bytes: int = MAX_DECODE_BYTES) -> PhotoHeader:
    """Check an upload's format and limits from its header alone; raises the ImageError that
    `load_rgb_bytes` would raise for them. A server uses it to reserve memory before decoding."""
    if not data:
        raise ImageError("upload is empty (0 bytes)", fix="send the photo file itself", path=name)
    im = _open(io.BytesIO(data), name, max_pixels, max_bytes)
    return PhotoHeader(im.format or "", im.mode, im.width, im.height, _cost(im))


def _check_regular_file(path: Path, shown: str) -> None:
    """Raise the ImageError for anything at `path` that is not a non-empty regular file, from its
    metadata alone (nothing is opened)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageError(f"broken link: it points to {display_path(os.readlink(path))}, which does "
                             "not exist", fix=_FIX_LINK, path=shown) from None
        raise ImageError("file not found", fix="check the path and spelling", path=shown) from None
    except PermissionError:
        raise ImageError("cannot read the file (permission denied)", fix="check its permissions",
                         path=shown) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError("symbolic link loop: the link leads back to itself", fix=_FIX_LINK,
                             path=shown) from None
        raise ImageError(f"cannot read the file ({exc.strerror})", fix="check its permissions",
                         path=shown) from None
    if stat.S_ISDIR(st.st_mode):
        _check_folder(path, st, shown)
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"not a regular file ({_kind(st.st_mode)})",
                         fix="photos must be ordinary files; move it out of the photo folder", path=shown)
    if st.st_size == 0:
        raise ImageError("file is empty (0 bytes)", fix=_FIX_REPLACE, path=shown)


def _check_folder(path: Path, st: os.stat_result, shown: str) -> None:
    """Always raises: why a folder was given where a photo was expected (`iter_photos` yields the
    folders it cannot walk, so that they are reported rather than skipped)."""
    if os.path.islink(path) and _loops_back(path, st):
        raise ImageError("symbolic link loop: the link leads back to a folder above it", fix=_FIX_LINK,
                         path=shown)
    try:
        with os.scandir(path):
            pass
    except PermissionError:
        raise ImageError("cannot list folder: permission denied",
                         fix="give yourself read and execute permission on it (chmod u+rx), or move it "
                             "out of the photo folder", path=shown) from None
    except OSError as exc:
        raise ImageError(f"cannot list folder: {exc.strerror}",
                         fix="check the disk, or move the folder out of the photo folder",
                         path=shown) from None
    raise ImageError("is a folder, not a photo", fix="pass the path of a photo file", path=shown)


def _loops_back(path: Path, st: os.stat_result) -> bool:
    for parent in path.absolute().parents:
        try:
            if os.path.samestat(st, os.stat(parent)):
                return True
        except OSError:
            continue
    return False


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a file"


def _decode(fp: BinaryIO, where: str, max_pixels: int, max_bytes: int) -> Image.Image:
    """Open, check the limits, fully decode, orient and convert; every Pillow failure becomes ImageError."""
    im = _open(fp, where, max_pixels, max_bytes)
    try:
        im.load()
    except MemoryError:
        raise ImageError(
            "not enough memory to decode this photo", fix="use a smaller photo", path=where
        ) from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error... on bad data
        raise _corrupt(exc, where) from None
    try:
        return _to_rgb(_upright(im))
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


def _open(fp: BinaryIO, where: str, max_pixels: int, max_bytes: int) -> Image.Image:
    """Read the header with an allowed plugin and check the pixel and memory limits (no decoding)."""
    try:
        # Our own size check below enforces `max_pixels`; Pillow's warning would only duplicate it.
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp, formats=PHOTO_FORMATS)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found[1]):,}" if found else "over Pillow's hard limit"
        raise _too_many_pixels(where, size, max_pixels) from None
    except UnidentifiedImageError:
        raise _unidentified(fp, where) from None
    except Exception as exc:
        raise _corrupt(exc, where) from None
    width, height = im.size
    if width * height > max_pixels:
        raise _too_many_pixels(where, f"{width}x{height} = {width * height:,}", max_pixels)
    need = _cost(im)
    if need > max_bytes:
        raise ImageError(
            f"image has too many pixels for its kind ({width}x{height} {im.format} in colour mode "
            f"{im.mode} needs about {_mb(need)} to decode; the limit is {_mb(max_bytes)})",
            fix="resize the photo (a few megapixels is plenty) or save it as an 8-bit JPEG",
            path=where,
        )
    return im


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
    return ImageError("not an image, or a format Pillow does not recognise", fix=_FIX_REPLACE, path=where)


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
                 progressive: bool = False, transparent: bool = False) -> int:
    """Estimated peak memory, in bytes, to decode a photo and turn it into 8-bit RGB with `load_rgb`.

    The sum of: the decoded pixels at Pillow's size for `mode`; the decoder's own full-size buffer
    (libwebp decodes into one, libtiff may read the whole image as one strip, a progressive JPEG keeps
    every coefficient: 2 bytes per pixel and component); a rotated copy when EXIF asks for one; and the
    conversion to RGB (nothing for RGB, 4 bytes per pixel for the RGB result, 16 when transparency is
    composited on white). An upper bound: not every term is alive at the same moment.
    """
    pixels = size[0] * size[1]
    stored = stored_bytes_per_pixel(mode)
    per_pixel = stored
    if fmt == "WEBP":
        per_pixel += 4
    elif fmt == "TIFF":
        per_pixel += stored
    elif fmt in {"JPEG", "MPO"} and progressive:
        per_pixel += 2 * (Image.getmodebands(mode) if mode in Image.MODES else 4)
    if rotated:
        per_pixel += stored
    if mode in _ALPHA or transparent:
        per_pixel += 16
    elif mode != "RGB":
        per_pixel += 4
    return pixels * per_pixel


def _cost(im: Image.Image) -> int:
    return decode_bytes(im.mode, im.size, im.format or "", rotated=_orientation(im) != 1,
                        progressive=bool(im.info.get("progressive") or im.info.get("progression")),
                        transparent="transparency" in im.info)


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
