"""Reading photos: any format Pillow knows, recognised by content, always returned as 8-bit RGB.

Every failure becomes an `ImageError` that names the file, says what is wrong and how to fix it,
so a bad photo in a folder of thousands never surfaces as a bare Pillow traceback.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from monkeysee.errors import DataError, ImageError

MAX_PIXELS: int = 89_478_485
"""Largest photo accepted (Pillow's own decompression-bomb default: about 9,459 x 9,459)."""

# Files that operating systems and archivers leave in photo folders; never photos.
_JUNK_NAMES = frozenset({"Thumbs.db", "desktop.ini", "__MACOSX"})

# `warnings.catch_warnings` swaps process-wide state; serialise our use of it across loader threads.
_OPEN_LOCK = threading.Lock()

_FIX_REPLACE = "replace it with a JPEG or PNG photo, or delete it"


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode the photo at `path` completely and return it upright, as 8-bit RGB.

    The format is recognised from the bytes, not the file name. EXIF orientation is applied,
    transparency is composited on white and 16-bit greyscale is scaled down (not clipped).
    """
    path = Path(path)
    if path.is_dir():
        raise ImageError("is a folder, not a photo", fix="pass the path of a photo file", path=path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError("file not found", fix="check the path and spelling", path=path) from None
    except OSError as exc:
        raise ImageError(
            f"cannot read the file ({exc.strerror})", fix="check its permissions", path=path
        ) from None
    if size == 0:
        raise ImageError("file is empty (0 bytes)", fix=_FIX_REPLACE, path=path)
    try:
        with open(path, "rb") as fp:
            return _decode(fp, path, max_pixels)
    except PermissionError:
        raise ImageError(
            "cannot read the file (permission denied)", fix="check its permissions", path=path
        ) from None
    except IsADirectoryError:
        raise ImageError("is a folder, not a photo", fix="pass the path of a photo file", path=path) from None


def load_rgb_bytes(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """`load_rgb` for photos that arrive in memory (web uploads); `name` is used in error messages."""
    if not data:
        raise ImageError("upload is empty (0 bytes)", fix="send the photo file itself", path=name)
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(fp: BinaryIO, where: str | Path, max_pixels: int) -> Image.Image:
    """Open, size-check, fully decode, orient and convert; every Pillow failure becomes ImageError."""
    try:
        # Our own size check below enforces `max_pixels`; Pillow's warning would only duplicate it.
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
        width, height = im.size
        if width * height > max_pixels:
            raise _too_big(where, f"{width}x{height} = {width * height:,}", max_pixels)
        im.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"image has too many pixels, possibly a decompression bomb ({exc})",
            fix="resize the photo (a few megapixels is plenty)",
            path=where,
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            "not an image, or a format Pillow does not recognise", fix=_FIX_REPLACE, path=where
        ) from None
    except MemoryError:
        raise ImageError(
            "not enough memory to decode this photo", fix="use a smaller photo", path=where
        ) from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error... on bad data
        raise ImageError(
            f"truncated or corrupt image data ({type(exc).__name__}: {exc})",
            fix="re-export or re-download the photo, or delete it",
            path=where,
        ) from None
    try:
        return _to_rgb(_upright(im))
    except Exception as exc:
        raise ImageError(
            f"cannot convert colour mode {im.mode!r} to RGB ({exc})",
            fix="re-save the photo as an ordinary RGB JPEG or PNG",
            path=where,
        ) from None


def _too_big(where: str | Path, size: str, max_pixels: int) -> ImageError:
    return ImageError(
        f"image has too many pixels ({size}; the limit is {max_pixels:,}), possibly a decompression bomb",
        fix="resize the photo (a few megapixels is plenty) or raise max_pixels if you trust it",
        path=where,
    )


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block is not worth losing the photo over."""
    try:
        return ImageOps.exif_transpose(im) or im
    except Exception:
        return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, compositing transparency on white."""
    if im.mode in {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}:
        return _high_depth_to_l(im).convert("RGB")
    if im.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit (and 32-bit int) greyscale is taken as 0..65535, float as 0..1; scaled to 0..255."""
    values = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        top = 1.0 if values.size == 0 or float(np.nanmax(values)) <= 1.0 else 255.0
        scaled = values / top * 255.0
    else:
        scaled = values / 257.0  # 65535 / 255: maps 0 -> 0 and 65535 -> 255 exactly
    return Image.fromarray(np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8), mode="L")


# Files that commonly sit beside photos without being photos (read-me's, lists, saved arrays).
NOT_PHOTO_SUFFIXES = frozenset({".txt", ".md", ".csv", ".json", ".yaml", ".yml", ".html", ".pdf", ".npy"})


def is_sidecar(path: Path) -> bool:
    """True for a file that is clearly not meant as a photo (by suffix); everything else is tried."""
    return path.suffix.lower() in NOT_PHOTO_SUFFIXES


def iter_photos(folder: Path) -> Iterator[Path]:
    """Every regular file under `folder`, recursively, in sorted order; hidden and OS-junk files skipped.

    No extension filter: the content decides later whether a file is a photo. A generator over
    `os.scandir`, sorted one directory at a time, so a folder of millions starts yielding at once.
    """
    yield from _walk(Path(folder), set())


def _walk(folder: Path, seen: set[tuple[int, int]]) -> Iterator[Path]:
    try:
        st = folder.stat()
        key = (st.st_dev, st.st_ino)
        if key in seen:  # a symlink loop back into a folder already being walked
            return
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        raise DataError("folder not found", fix="check the path", path=folder) from None
    except NotADirectoryError:
        raise DataError("not a folder", fix="pass the folder that holds the photos", path=folder) from None
    except PermissionError:
        raise DataError(
            "cannot list the folder (permission denied)", fix="check its permissions", path=folder
        ) from None
    seen = seen | {key}
    for entry in entries:
        if entry.name.startswith(".") or entry.name in _JUNK_NAMES:
            continue
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()
        except OSError:  # vanished entry: nothing to read
            continue
        if is_dir:
            yield from _walk(Path(entry.path), seen)
        elif is_file:  # broken symlinks, sockets and fifos are neither
            yield Path(entry.path)
