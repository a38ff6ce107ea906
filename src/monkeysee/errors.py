"""Errors a user can act on: each names the thing at fault, the problem and the fix."""

from __future__ import annotations

from pathlib import Path


class MonkeyseeError(Exception):
    """Base class for every error the CLI reports without a traceback."""

    def __init__(self, problem: str, fix: str = "", path: str | Path | None = None) -> None:
        self.problem = problem
        self.fix = fix
        self.path = None if path is None else str(path)
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = f"{self.path}: " if self.path else ""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{where}{self.problem}.{fix}"


class ImageError(MonkeyseeError):
    """A file that is not a readable photo."""


class DataError(MonkeyseeError):
    """A data folder or labels file that cannot be used as given."""


class CheckpointError(MonkeyseeError):
    """A run folder or checkpoint that cannot be loaded."""


class ConfigError(MonkeyseeError):
    """A configuration value or file that makes no sense."""


class ExplainError(MonkeyseeError):
    """A model, layer or calling context that cannot be looked inside or explained as asked."""
