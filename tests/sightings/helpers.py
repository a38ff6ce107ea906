"""Small photos and sightings for the log's tests."""

from __future__ import annotations

import io
from datetime import timedelta

from PIL import Image

from monkeysee.sightings import ModelAnswer, NewSighting, PhotoIn
from tests.sightings.conftest import START


def jpeg(seed: int, size: int = 32) -> bytes:
    """A distinct small JPEG per seed."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (seed * 37 % 256, seed * 91 % 256, seed * 13 % 256)).save(buf, "JPEG")
    return buf.getvalue()


def answer(taxon: str | None = "Alouatta palliata", p: float = 0.9, verdict: str = "species",
           rank: str | None = "species") -> ModelAnswer:
    return ModelAnswer(run="runs/monkeys", rank=rank, taxon=taxon, species_hint=taxon or "Alouatta palliata",
                       probability=p, verdict=verdict)


def sighting(*seeds: int, hours: int = 0, **changes) -> NewSighting:
    base = dict(photos=[PhotoIn(jpeg(s), name=f"p{s}.jpg") for s in seeds or (1,)],
                observed_at=START + timedelta(hours=hours), answer=answer())
    return NewSighting(**(base | changes))
