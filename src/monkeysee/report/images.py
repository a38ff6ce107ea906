"""Pictures as data: URIs, so the report is one file: photos as JPEG (small), drawings as PNG (sharp)."""

from __future__ import annotations

import base64
import io
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

PHOTO_QUALITY = 82

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def _uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _pil(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode not in {"RGB", "L"} else image
    return Image.fromarray(np.ascontiguousarray(image))


def jpeg_uri(
    image: Image.Image | np.ndarray, quality: int = PHOTO_QUALITY, max_side: int | None = None
) -> str:
    """A photo (PIL or RGB uint8 array) as a JPEG data URI, shrunk so its longer side is <= max_side."""
    pil = _pil(image)
    if max_side is not None and max(pil.size) > max_side:
        pil = pil.copy()
        pil.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality, optimize=True)
    return _uri(buf.getvalue(), "image/jpeg")


def png_uri(image: Image.Image | np.ndarray) -> str:
    """A drawing or small map as a lossless PNG data URI."""
    buf = io.BytesIO()
    _pil(image).save(buf, format="PNG", optimize=True)
    return _uri(buf.getvalue(), "image/png")


def figure_uri(fig: Figure, dpi: int = 100, jpeg: bool = False) -> str:
    """A matplotlib figure as a PNG data URI (white background, trimmed to its content); as JPEG for
    figures full of smooth images, where PNG would be several times larger."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white", bbox_inches="tight")
    if jpeg:
        return jpeg_uri(Image.open(buf).convert("RGB"), quality=85)
    return _uri(buf.getvalue(), "image/png")


def file_uri(path: str | Path) -> str:
    """An existing PNG or JPEG file as a data URI, bytes unchanged."""
    path = Path(path)
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"{path}: only PNG and JPEG files can be embedded")
    return _uri(path.read_bytes(), mime)


def stored_or_plot_uri(stored: Path, plot: Callable[[Path], Path]) -> str:
    """The PNG that training or evaluation already wrote, else the same plot drawn now."""
    return file_uri(stored) if stored.is_file() else plot_uri(plot)


def plot_uri(plot: Callable[[Path], Path]) -> str:
    """A plot helper that writes a PNG to the path it is given (as in `monkeysee.evaluate.plots`), as a
    data URI; the file lives in a temporary folder that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="monkeysee-report-") as tmp:
        return file_uri(plot(Path(tmp) / "plot.png"))
