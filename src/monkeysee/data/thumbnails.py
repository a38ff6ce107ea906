"""Small WebP thumbnails of training photos, packed into one blob with offsets, for showing the photos an
answer is compared with. Each is at most `SIDE` pixels on its longer side and at most `MAX_BYTES` bytes
(quality is lowered until it fits), so 10,000 photos take at most 50 MB; a typical photo takes 2-4 KB."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from monkeysee.errors import CheckpointError

SIDE = 96
MAX_BYTES = 5_000  # 50 MB per 10,000 photos
QUALITIES = (75, 60, 45, 30, 15)
MEDIA_TYPE = "image/webp"


def thumbnail(image: Image.Image, side: int = SIDE, max_bytes: int = MAX_BYTES) -> bytes:
    """`image` as a WebP no larger than `side` pixels and `max_bytes` bytes (shrunk further if need be)."""
    im = image.convert("RGB")
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    while True:
        for quality in QUALITIES:
            buf = io.BytesIO()
            im.save(buf, format="WEBP", quality=quality, method=4)
            if buf.tell() <= max_bytes:
                return buf.getvalue()
        im = im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.LANCZOS)


def placeholder(side: int = SIDE) -> bytes:
    """A grey square, for a training photo that can no longer be read."""
    return thumbnail(Image.new("RGB", (side, side), (128, 128, 128)), side)


def pack(thumbs: Iterable[bytes]) -> tuple[bytes, np.ndarray]:
    """One blob of all thumbnails and the (N + 1,) offsets: thumbnail i is blob[offsets[i]:offsets[i+1]]."""
    parts = list(thumbs)
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    return b"".join(parts), offsets


class Thumbnails:
    """The packed thumbnails of the training photos, read one at a time by bank row."""

    def __init__(self, path: Path, offsets: np.ndarray, size: int | None, fix: str) -> None:
        self.path, self.offsets, self.size = path, np.asarray(offsets, dtype=np.int64), size
        self.fix = fix  # what to do when the file is missing or not the one pinned

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        return int(self.offsets[-1])

    def read(self, row: int) -> bytes:
        """Thumbnail `row`'s bytes; an IndexError for a row that is not there, a CheckpointError when the
        file is not the one the manifest pins (truncated, replaced)."""
        if not 0 <= row < len(self):
            raise IndexError(f"no thumbnail {row}: the run has {len(self)}")
        if not self.path.is_file() or self.path.stat().st_size != self.size:
            raise CheckpointError(f"{self.path.name} is missing or does not match manifest.json",
                                  fix=self.fix, path=self.path)
        start, stop = int(self.offsets[row]), int(self.offsets[row + 1])
        with self.path.open("rb") as f:
            f.seek(start)
            return f.read(stop - start)
