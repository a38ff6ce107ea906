"""What can go wrong with the keeper's log, each with the thing at fault and the fix."""

from __future__ import annotations

from monkeysee.errors import MonkeyseeError


class SightingError(MonkeyseeError):
    """Base class of the log's errors."""


class InputError(SightingError):
    """A value a keeper typed or sent that the log refuses (too long, a path in a name, unknown id)."""


class NotFound(InputError):
    """A sighting number that names no sighting."""


class AccessError(SightingError):
    """A token that names nobody, or a keeper asking for what their role does not allow."""


class StoreUnavailable(SightingError):
    """The database or the photo folder cannot be reached or written (down, locked, disk full)."""
