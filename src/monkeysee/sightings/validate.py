"""Every value a keeper types is checked here before it reaches the database: a clear error naming the
field, what is wrong and the fix. Values are bound as SQL parameters, so SQL in a text field is kept as
text; names that become folder names (species in `export-training`) cannot hold a path."""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import UTC, datetime, timedelta

from monkeysee.sightings.errors import InputError
from monkeysee.sightings.schema import ROLES, STATUSES, VERDICTS

NOTES_MAX = 4000
PLACE_TEXT_MAX = 200
PLACE_MAX = 120
SPECIES_MAX = 120
KEEPER_MAX = 80
TAXON_MAX = 200
RUN_MAX = 300

_NAME = re.compile(r"[^\W_][\w .,'()\-]*", re.UNICODE)
_RANK = re.compile(r"[a-z]{1,32}")


def text(value: object, field: str, limit: int, multiline: bool = False) -> str:
    """A string of at most `limit` characters, without control characters (newlines and tabs allowed
    when `multiline`), stripped of surrounding space."""
    if not isinstance(value, str):
        raise InputError(f"{field} must be text, not {type(value).__name__}", fix=f"send {field} as a string")
    if len(value) > limit:
        raise InputError(f"{field} is {len(value):,} characters long; at most {limit:,} are kept",
                         fix=f"shorten {field}")
    allowed = "\n\t" if multiline else ""
    bad = next((c for c in value if unicodedata.category(c)[0] == "C" and c not in allowed), None)
    if bad is not None:
        raise InputError(f"{field} holds the control character U+{ord(bad):04X}",
                         fix=f"remove it from {field}")
    return value.strip()


def name(value: object, field: str, limit: int) -> str:
    """A name that is safe as a folder name: letters, digits, spaces and . , ' ( ) - after the first
    character, which is a letter or digit; never '..', '/' or '\\'."""
    s = text(value, field, limit)
    if not s:
        raise InputError(f"{field} is empty", fix=f"give a {field}")
    if ".." in s or not _NAME.fullmatch(s):
        raise InputError(f"{field} {s!r} may hold only letters, digits, spaces and . , ' ( ) - (no '..', "
                         "'/' or '\\'), starting with a letter or digit", fix=f"write the {field} plainly")
    return s


def species(value: object) -> str:
    return name(value, "species", SPECIES_MAX)


def keeper(value: object) -> str:
    return name(value, "keeper name", KEEPER_MAX)


def place(value: object) -> str:
    return name(value, "place", PLACE_MAX)


def notes(value: object) -> str:
    return text(value, "notes", NOTES_MAX, multiline=True)


def choice(value: object, field: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InputError(f"{field} {value!r} is not one of {', '.join(allowed)}", fix="pass one of them")
    return str(value)


def role(value: object) -> str:
    return choice(value, "role", ROLES)


def status(value: object) -> str:
    return choice(value, "status", STATUSES)


def verdict(value: object) -> str:
    return choice(value, "verdict", VERDICTS)


def rank(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _RANK.fullmatch(value):
        raise InputError(f"rank {value!r} is not a rank name", fix="pass species, genus, family, ... or none")
    return value


def probability(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise InputError(f"probability {value!r} is not a number from 0 to 1", fix="pass a probability")
    return float(value)


def optional_text(value: object, field: str, limit: int) -> str | None:
    return None if value is None else text(value, field, limit) or None


def when(value: object, now: datetime) -> datetime:
    """An aware time, not more than a day in the future."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InputError(f"time {value!r} is not a time with a zone",
                         fix="pass e.g. 2026-05-01T09:30:00+02:00")
    if value > now + timedelta(days=1):
        raise InputError(f"time {value.isoformat()} is in the future", fix="check the camera's clock")
    return value.astimezone(UTC)
