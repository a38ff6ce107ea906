"""How to serve one trained run: every limit of the server, with its default, in one dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from monkeysee.data.images import MAX_PIXELS
from monkeysee.errors import ConfigError

MB = 1024 * 1024
SPOOL_BYTES = 1024 * 1024 + 64 * 1024
"""Memory an arriving upload holds at most: Starlette keeps the first 1 MB of a file part in memory
(the rest goes to a temporary file), plus the parser's chunk."""
CONNECTION_BYTES = 64 * 1024
"""Memory an open connection holds at most in received, unread body (uvicorn pauses reading beyond it)."""


@dataclass(frozen=True)
class ServeConfig:
    """How to serve one trained run; `monkeysee serve` maps its options onto these fields."""

    run_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: float = 10.0
    top_k: int = 3
    unknown_threshold: float | None = None
    max_megapixels: float = MAX_PIXELS / 1_000_000  # every command's limit (data.images)
    max_batch: int = 8
    max_concurrent: int = 8  # photos being decoded or answered at once (each holds its upload's bytes)
    max_decode_mb: float = 256.0  # memory one photo may take to decode (data.images.decode_bytes)
    decode_budget_mb: float = 512.0  # memory all photos being decoded or answered may take together
    max_uploads: int = 128  # request bodies in flight (arriving, waiting or answered); beyond: JSON 503
    upload_timeout: float = 60.0  # seconds for a whole request body to arrive; else JSON 408
    idle_timeout: float = 10.0  # seconds for request headers, and the longest gap in a body
    max_connections: int = 512  # open connections; the request on one beyond gets a JSON 503
    max_connections_per_client: int = 32  # open connections from one address; one more: JSON 503
    max_uploads_per_client: int = 16  # of the max_uploads, the most one client address may hold
    token: str | None = field(default=None, repr=False)  # required on every /api call when set
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    threads: int | None = None  # torch threads; the command sets them, the app does not
    collection: str | None = None  # file of this zoo's species, one per line (data.collection)
    db: str | None = None  # the keeper's log: a SQLite file or a postgresql:// URL (else MONKEYSEE_DB)
    photos: Path | None = None  # the log's photo folder (default: beside a SQLite file)
    places: tuple[str, ...] = ()  # places (enclosures) offered when saving a sighting

    def __post_init__(self) -> None:
        """Every limit checked here, once, whether the command or code built the config."""
        counts = ("top_k", "max_batch", "max_concurrent", "max_uploads", "max_uploads_per_client",
                  "max_connections", "max_connections_per_client")
        positive = ("max_upload_mb", "max_megapixels", "max_decode_mb", "upload_timeout", "idle_timeout")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"--port {self.port} is not a port number", fix="pass a number from 1 to 65535")
        for name in (*counts, *(("threads",) if self.threads is not None else ())):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_flag(name)} must be at least 1, not {getattr(self, name)}",
                                  fix=f"e.g. {_flag(name)} {getattr(ServeConfig, name, 1) or 1}")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{_flag(name)} must be positive, not {getattr(self, name)}",
                                  fix=f"e.g. {_flag(name)} {getattr(ServeConfig, name)}")
        if self.decode_budget_mb < self.max_decode_mb:
            raise ConfigError(f"--decode-budget-mb {self.decode_budget_mb:g} is smaller than --max-decode-mb "
                              f"{self.max_decode_mb:g}, so the largest photo allowed could never be decoded",
                              fix="raise --decode-budget-mb or lower --max-decode-mb")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)

    @property
    def max_decode_bytes(self) -> int:
        return int(self.max_decode_mb * MB)

    @property
    def decode_budget_bytes(self) -> int:
        return int(self.decode_budget_mb * MB)

    @property
    def log_default(self) -> Path:
        """The log's SQLite file when neither --db nor MONKEYSEE_DB names one: beside the run folder."""
        return self.run_dir.with_name(self.run_dir.name + "-log.db")

    @property
    def memory_ceiling_bytes(self) -> int:
        """The most memory photos can take at once beyond the model's own, whatever is uploaded: the
        decode budget, the upload held by each photo being answered, the in-memory part of every upload
        in flight and the unread body each connection may buffer."""
        return (self.decode_budget_bytes + self.max_concurrent * self.max_upload_bytes
                + self.max_uploads * SPOOL_BYTES + self.max_connections * CONNECTION_BYTES)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
