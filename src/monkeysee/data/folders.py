"""Photo folders and paths: walking folders for what could be photos, telling a file from a link, loop,
FIFO or folder by its metadata, and naming paths in messages.

Nothing here decodes a photo; `images.load_rgb` decides what each file is.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from monkeysee.errors import DataError, ImageError

# Files that operating systems and archivers leave in photo folders; never photos.
_JUNK_NAMES = frozenset({"Thumbs.db", "desktop.ini", "__MACOSX"})


def display_path(path: str | bytes | os.PathLike) -> str:
    """`path` as printable text: bytes that are not UTF-8 (a file name from another system) are
    shown as backslash escapes, so any message naming the file can be printed and written as JSON."""
    raw = os.fsencode(path)
    return raw.decode("utf-8", errors="backslashreplace")


def as_path(path: str | bytes | os.PathLike) -> Path:
    """`path` (text, bytes or path-like) as a Path."""
    return Path(os.fsdecode(path))


_FIX_LINK = "fix the link or delete it"
FIX_REPLACE = "replace it with a JPEG or PNG photo, or delete it"


def check_regular_file(path: Path, shown: str) -> None:
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
        raise ImageError("file is empty (0 bytes)", fix=FIX_REPLACE, path=shown)


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


# Files that commonly sit beside photos without being photos (read-me's, lists, saved arrays).
NOT_PHOTO_SUFFIXES = frozenset({".txt", ".md", ".csv", ".json", ".yaml", ".yml", ".html", ".pdf", ".npy"})


def is_sidecar(path: Path) -> bool:
    """True for a file that is clearly not meant as a photo (by suffix); everything else is tried."""
    return path.suffix.lower() in NOT_PHOTO_SUFFIXES


def iter_photos(folder: str | bytes | os.PathLike) -> Iterator[Path]:
    """Every entry under `folder` that could be meant as a photo, recursively, in sorted order; hidden
    and OS-junk files skipped.

    No extension filter: the content decides later whether a file is a photo. Nothing is skipped
    silently either: broken links, link loops, FIFOs, sockets and sub-folders that cannot be listed are
    yielded like photos, so that `load_rgb` reports each with its reason (and the walk goes on). A
    generator over `os.scandir`, sorted one directory at a time, so a folder of millions starts
    yielding at once. Only `folder` itself being missing or unreadable raises (DataError).
    """
    folder = as_path(folder)
    shown = display_path(folder)
    try:
        st = folder.stat()
        entries = _entries(folder)
    except FileNotFoundError:
        raise DataError("folder not found", fix="check the path", path=shown) from None
    except NotADirectoryError:
        raise DataError("not a folder", fix="pass the folder that holds the photos", path=shown) from None
    except PermissionError:
        raise DataError(
            "cannot list the folder (permission denied)", fix="check its permissions", path=shown
        ) from None
    yield from _walk(entries, {(st.st_dev, st.st_ino)})


def _entries(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted(it, key=lambda e: e.name)


def _walk(entries: list[os.DirEntry], above: set[tuple[int, int]]) -> Iterator[Path]:
    """`above`: the folders being walked, to tell a link back to one of them (a loop) from a folder."""
    for entry in entries:
        if entry.name.startswith(".") or entry.name in _JUNK_NAMES:
            continue
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()  # follows links; False for broken links, loops, FIFOs, sockets
            st = os.stat(path) if is_dir else None
        except OSError:
            is_dir, st = False, None
        if st is None or (st.st_dev, st.st_ino) in above:
            yield path  # a file, or something load_rgb will name: a broken link, a loop, a FIFO...
            continue
        try:
            inside = _entries(path)
        except OSError:
            yield path  # a folder that cannot be listed becomes one error row ("cannot list folder")
            continue
        yield from _walk(inside, above | {(st.st_dev, st.st_ino)})
