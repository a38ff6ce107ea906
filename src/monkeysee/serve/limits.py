"""The server's limits on memory and uploads: what a photo costs, the budget photos share, and the ASGI
guard on request bodies (plain ASGI: no per-request task or body buffering).

A photo's cost (`photo_cost`) is what decoding and answering it really take at once: the decoding as
`data.images.decode_bytes` estimates it, plus one more full-size RGB copy, which the quality measures
make before they scale the photo down. Every photo reserves its cost from one `MemoryBudget` before it
is decoded, and waits its turn when the budget is in use.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monkeysee.data.images import PhotoHeader
from monkeysee.serve.schemas import ErrorResponse

log = logging.getLogger("monkeysee.serve")

ANSWER_BYTES_PER_PIXEL = 4
"""Memory answering a decoded photo takes beyond its decoding, per pixel of the decoded photo: the quality
measures convert it to RGB (Pillow keeps 4 bytes per RGB pixel) before they scale it down."""


def photo_cost(header: PhotoHeader) -> int:
    """Bytes decoding and answering the photo with this header take at most: its decoding, and the
    answer's copy at the size it decodes to (`header.output`)."""
    return header.decode_bytes + ANSWER_BYTES_PER_PIXEL * header.output[0] * header.output[1]


def sighting_cost(headers: Sequence[PhotoHeader]) -> int:
    """Bytes answering a sighting's photos takes at most when they are decoded one after another and kept
    until the model has answered them all: the largest decoding, and each photo's decoded copy and its
    answer's copy (`ANSWER_BYTES_PER_PIXEL` each, an upper bound for an RGB photo)."""
    kept = sum(2 * ANSWER_BYTES_PER_PIXEL * h.output[0] * h.output[1] for h in headers)
    return max(h.decode_bytes for h in headers) + kept


class MemoryBudget:
    """Bytes of memory handed out to photos being decoded and answered. A photo waits, first come first
    served, until its share is free, so the total never exceeds `total` whatever arrives."""

    def __init__(self, total: int, on_idle: Callable[[], object] | None = None) -> None:
        self.total = total
        self.free = total
        self.peak = 0  # most bytes handed out at once, for tests and benchmarks
        self.on_idle = on_idle  # run in a background thread whenever the last photo gives its share back
        self._idle_running = threading.Lock()  # one at a time; a burst's end needs only one
        self._waiting: deque[tuple[int, anyio.Event]] = deque()

    @property
    def idle(self) -> bool:
        """True when no photo holds or waits for a share."""
        return self.free == self.total and not self._waiting

    @asynccontextmanager
    async def reserve(self, nbytes: int) -> AsyncIterator[None]:
        nbytes = min(nbytes, self.total)  # the per-photo limit keeps this a no-op; never wait for ever
        if self._waiting or self.free < nbytes:
            turn = (nbytes, anyio.Event())
            self._waiting.append(turn)
            try:
                await turn[1].wait()
            except BaseException:  # the client went away: give back the share, or the place in line
                if turn in self._waiting:
                    self._waiting.remove(turn)
                else:
                    self._release(nbytes)
                raise
        else:
            self._take(nbytes)
        try:
            yield
        finally:
            self._release(nbytes)
        if self.idle and self.on_idle is not None and not self._idle_running.locked():
            threading.Thread(target=self._run_idle, name="monkeysee-idle", daemon=True).start()

    def _run_idle(self) -> None:
        """`on_idle`, off the request's path: the answer is not held back by it."""
        if self._idle_running.acquire(blocking=False):
            try:
                assert self.on_idle is not None
                self.on_idle()
            finally:
                self._idle_running.release()

    def _take(self, nbytes: int) -> None:
        self.free -= nbytes
        self.peak = max(self.peak, self.total - self.free)

    def _release(self, nbytes: int) -> None:
        self.free += nbytes
        while self._waiting and self._waiting[0][0] <= self.free:
            size, event = self._waiting.popleft()
            self._take(size)
            event.set()


def error_response(status: int, code: str, detail: str, fix: str | None = None,
                   errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None,
                   ) -> JSONResponse:
    """The JSON error every refusal is answered with."""
    body = ErrorResponse(error=code, detail=detail, fix=fix or None, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)



class UploadTooLarge(HTTPException):
    """Raised while the body streams in, once it passes the limit (FastAPI re-raises HTTPExceptions)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit:,} bytes")


class UploadTimeout(HTTPException):
    """Raised while the body streams in, once it is late: answered 408, and the connection closed."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(408, detail, headers={"connection": "close"})
        self.fix = fix


class UploadLimit:
    """Guard request bodies: refuse one over `max_body` bytes (at once when Content-Length says so, else
    as it streams in, so it is never buffered or spooled); refuse a body when `max_uploads` are already
    in flight, or `per_client` from the same client address (JSON 503; /health and other GETs never wait
    behind uploads); and cut off a body that has not fully arrived `timeout` seconds after its headers,
    or pauses longer than `idle` (JSON 408)."""

    def __init__(self, app: ASGIApp, max_body: int, fix: str = "send a smaller photo",
                 max_uploads: int = 128, timeout: float = 60.0, idle: float = 10.0,
                 per_client: int = 16, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_body = max_body
        self.larger = larger or {}  # path -> its own body limit (a sighting carries several photos)
        self.fix = fix
        self.max_uploads = max_uploads
        self.per_client = per_client
        self.timeout = timeout
        self.idle = idle
        self.in_flight = 0
        self.by_client: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            await error_response(400, "bad_request", "Content-Length header is not a number",
                                 "send a valid Content-Length")(scope, receive, send)
            return
        max_body = self.larger.get(scope["path"], self.max_body)
        if declared is not None and declared > max_body:
            detail = str(UploadTooLarge(max_body).detail)
            await error_response(413, "too_large", detail, self.fix)(scope, receive, send)
            return
        client = scope["client"][0] if scope.get("client") else ""
        busy = self._busy(client)
        if busy is not None:
            log.warning("refused an upload from %s: %s", client or "?", busy)
            await error_response(503, "busy", busy, "try again in a few seconds",
                                 headers={"retry-after": "2", "connection": "close"})(scope, receive, send)
            return
        self.in_flight += 1
        self.by_client[client] += 1
        try:
            await self.app(scope, self._guarded(receive, max_body), send)
        finally:
            self.in_flight -= 1
            self.by_client[client] -= 1
            if self.by_client[client] <= 0:
                del self.by_client[client]

    def _busy(self, client: str) -> str | None:
        """Why one more upload from `client` is refused now, or None."""
        if self.in_flight >= self.max_uploads:
            return f"the server is receiving or answering {self.in_flight} uploads already"
        if self.by_client[client] >= self.per_client:
            return f"this address has {self.by_client[client]} uploads in flight already"
        return None

    def _guarded(self, receive: Receive, max_body: int) -> Receive:
        deadline = anyio.current_time() + self.timeout
        received = 0
        done = False

        async def guarded() -> Message:
            nonlocal received, done
            if done:  # the body is in: later calls only wait for a disconnect
                return await receive()
            left = deadline - anyio.current_time()
            with anyio.move_on_after(min(left, self.idle)):
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    done = not message.get("more_body", False)
                    if received > max_body:
                        raise UploadTooLarge(max_body)
                return message
            if anyio.current_time() >= deadline:
                raise UploadTimeout(f"the upload did not arrive within {self.timeout:g} seconds "
                                    f"({received:,} bytes came)",
                                    "send the photo again over a faster connection, or a smaller photo")
            raise UploadTimeout(f"the upload stalled: nothing arrived for {self.idle:g} seconds "
                                f"({received:,} bytes came)", "send the photo again")

        return guarded


def _content_length(scope: Scope) -> int | None:
    """The declared body size; None when absent, -1 when unreadable."""
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                n = int(value)
            except ValueError:
                return -1
            return n if n >= 0 else -1
    return None
