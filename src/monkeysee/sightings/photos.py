"""The photo folder: each photo stored once under its content hash (`ab/abcdef....jpg`), written
atomically, so a sighting's photo is there before the row that names it is committed."""

from __future__ import annotations

import errno
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from monkeysee.io import atomic_write_bytes
from monkeysee.sightings.errors import InputError, StoreUnavailable

MAX_PHOTO_BYTES = 25 * 1024 * 1024
MEDIA_TYPES = {"JPEG": ("image/jpeg", ".jpg"), "PNG": ("image/png", ".png"), "WEBP": ("image/webp", ".webp"),
               "TIFF": ("image/tiff", ".tif"), "BMP": ("image/bmp", ".bmp"), "GIF": ("image/gif", ".gif")}


@dataclass(frozen=True)
class StoredPhoto:
    sha256: str
    location: str  # relative to the photo folder
    media_type: str
    size_bytes: int


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def describe(data: bytes, source: str = "photo") -> StoredPhoto:
    """Hash and media type of a photo's bytes; refuses what is not a photo or is too big."""
    if len(data) > MAX_PHOTO_BYTES:
        raise InputError(f"{source} is {len(data) / 1e6:.1f} MB; at most {MAX_PHOTO_BYTES / 1e6:.0f} MB",
                         fix="send a smaller photo")
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or ""
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{source} is not a readable photo ({e})", fix="send a JPEG or PNG photo") from None
    if fmt not in MEDIA_TYPES:
        raise InputError(f"{source} is a {fmt or 'unknown'} image", fix="send JPEG, PNG or WebP")
    media_type, ext = MEDIA_TYPES[fmt]
    sha = sha256_of(data)
    return StoredPhoto(sha, f"{sha[:2]}/{sha}{ext}", media_type, len(data))


class PhotoFolder:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def path(self, location: str) -> Path:
        """The file of a stored photo; a location that leads out of the folder is refused."""
        p = (self.root / location).resolve()
        if not p.is_relative_to(self.root):
            raise InputError(f"photo location {location!r} is outside the photo folder", path=self.root)
        return p

    def put(self, data: bytes, photo: StoredPhoto) -> None:
        """Write the photo unless a file with its content is already there."""
        target = self.path(photo.location)
        if target.exists() and target.stat().st_size == photo.size_bytes:
            return
        try:
            atomic_write_bytes(target, data)
        except OSError as e:
            fix = "free disk space" if e.errno == errno.ENOSPC else "check the photo folder's permissions"
            raise StoreUnavailable(f"the photo could not be written ({e.strerror or e})", path=target.parent,
                                   fix=fix) from None

    def read(self, location: str) -> bytes:
        return self.path(location).read_bytes()
