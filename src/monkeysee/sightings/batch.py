"""Logging a camera-trap folder: one sighting per photo, resumable. A photo already in the log (by its
content hash, wherever and however it was logged) is skipped before the model sees it, and each
sighting's key is its photo's hash, so a second run over the same photos never logs one twice."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from PIL import Image

from monkeysee.sightings.errors import InputError
from monkeysee.sightings.photos import sha256_of
from monkeysee.sightings.records import Answerable, ModelAnswer, NewSighting, PhotoIn
from monkeysee.sightings.store import Store

EXIF_IFD, DATETIME_ORIGINAL = 0x8769, 0x9003


class PathPredictor(Protocol):
    """What batch logging needs of `monkeysee.predict.Predictor`."""

    def predict_paths(self, paths: Iterable[str | Path], top_k: int = ..., batch_size: int = ...) \
            -> Iterator[Answerable]: ...


@dataclass
class BatchCounts:
    logged: int = 0
    already: int = 0
    unreadable: int = 0


def taken_at(path: Path) -> datetime:
    """When the photo was taken: its EXIF DateTimeOriginal (in this computer's zone), else the file's
    modification time."""
    try:
        with Image.open(path) as im:
            raw = im.getexif().get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL)
        if isinstance(raw, str):
            return datetime.strptime(raw.strip(), "%Y:%m:%d %H:%M:%S").astimezone(UTC)
    except (OSError, ValueError):
        pass
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def log_folder(store: Store, predictor: PathPredictor, paths: Iterable[Path], run: str,
               place: str | None = None, batch_size: int = 16) -> BatchCounts:
    """Predict and log every photo of `paths` not yet in the log; `place` is a listed place or text."""
    counts = BatchCounts()
    listed = {p.name for p in store.places()}
    where = {"place": place} if place in listed else {"place_text": place}
    todo: dict[str, str] = {}  # path -> sha256, for the photos the log lacks
    for chunk in _chunks(paths, 256):
        hashes = {str(p): sha256_of(p.read_bytes()) for p in chunk if p.is_file()}
        counts.unreadable += len(chunk) - len(hashes)
        done = store.logged(hashes.values())
        counts.already += sum(h in done for h in hashes.values())
        todo |= {p: h for p, h in hashes.items() if h not in done}
    for pred in predictor.predict_paths(list(todo), batch_size=batch_size):
        d = pred.to_dict()
        path = Path(d["source"])
        if "error" in d:
            counts.unreadable += 1
            continue
        answer = ModelAnswer.from_prediction(pred, run)
        new = NewSighting(photos=[PhotoIn(path.read_bytes(), path.name, answer, 1.0)],
                          observed_at=taken_at(path), answer=answer, key=todo[str(path)], **where)
        try:
            store.save(new)
        except InputError:
            counts.unreadable += 1
            continue
        counts.logged += 1
    return counts


def _chunks(paths: Iterable[Path], n: int) -> Iterator[list[Path]]:
    chunk: list[Path] = []
    for p in paths:
        chunk.append(Path(p))
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
