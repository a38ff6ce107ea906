"""The HTTP/1.1 connection under the app: uvicorn's h11 protocol with the guards it lacks.

uvicorn has no public hook for any of them, so `guarded_protocol` subclasses its `H11Protocol`
(`uvicorn.protocols.http.h11_impl`, with its `connections`, `client`, `cycle` and `app` attributes);
pyproject pins uvicorn to the version these guards are tested with. Every answer given at this level
is the app's JSON error shape, written as a whole response that closes the connection:

- request headers must arrive within `header_timeout` seconds of connecting or of the last answer,
  else a 408 (a client trickling them would otherwise hold its connection for ever);
- one client address may hold `per_client` connections; one more is answered a 503 at once and closed,
  so a single address cannot take the places that `/health` and other clients need (behind a reverse
  proxy every client has the proxy's address: raise the per-client limits there);
- a request on a connection beyond `max_connections` in total gets a 503 (uvicorn's own limit answers
  plain text);
- a request the HTTP parser rejects gets a 400 (uvicorn's answers plain text).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from monkeysee.serve.limits import error_response

if TYPE_CHECKING:
    import asyncio

    from monkeysee.serve.config import ServeConfig

KEEP_ALIVE_S = 5
"""An idle keep-alive connection is closed after this many seconds."""

FIX_HTTP = "send a well-formed HTTP/1.1 request (e.g. curl -F photo=@monkey.jpg URL/api/predict)"


def raw_json_response(status: int, reason: str, code: str, detail: str, fix: str,
                      retry_after: int | None = None) -> bytes:
    """A whole HTTP/1.1 response with the app's JSON error body, for answering below the ASGI app
    (it closes the connection)."""
    body = json.dumps({"error": code, "detail": detail, "fix": fix}).encode()
    retry = f"retry-after: {retry_after}\r\n" if retry_after is not None else ""
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n{retry}"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + body


def guarded_protocol(max_connections: int, header_timeout: float, per_client: int) -> type:
    """uvicorn's h11 protocol with a header deadline, a per-address and a total connection limit, and
    JSON answers for requests its parser rejects (see the module's docstring)."""
    late = raw_json_response(408, "Request Timeout", "timeout",
                             f"the request headers did not arrive within {header_timeout:g} seconds",
                             "send the whole request promptly")
    crowded = raw_json_response(503, "Service Unavailable", "busy",
                                f"this address has {per_client} connections open to the server already",
                                "close idle connections, or try again in a few seconds", retry_after=2)
    malformed = raw_json_response(400, "Bad Request", "bad_request",
                                  "the request is not valid HTTP/1.1 (bad request line, header or framing)",
                                  FIX_HTTP)
    busy = error_response(503, "busy", "the server has too many open connections",
                          "try again in a few seconds", headers={"retry-after": "2", "connection": "close"})
    per_address: Counter[str] = Counter()  # open connections by client address, for this server

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._address = self.client[0] if self.client else ""
            per_address[self._address] += 1
            if per_address[self._address] > per_client:
                transport.write(crowded)
                transport.close()
                return
            if len(self.connections) > max_connections:
                self.app = busy
            self._expect_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            per_address[self._address] -= 1
            if per_address[self._address] <= 0:
                del per_address[self._address]
            timer = getattr(self, "_headers_timer", None)
            if timer is not None:
                timer.cancel()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._expect_headers()

        def send_400_response(self, msg: str) -> None:
            if not self.transport.is_closing():
                self.transport.write(malformed)
                self.transport.close()

        def _expect_headers(self) -> None:
            previous = getattr(self, "_headers_timer", None)
            if previous is not None:
                previous.cancel()
            self._headers_timer = self.loop.call_later(header_timeout, self._headers_due, self.cycle)

        def _headers_due(self, cycle: object) -> None:
            waiting = self.cycle is cycle and (cycle is None or getattr(cycle, "response_complete", False))
            if waiting and not self.transport.is_closing():
                self.transport.write(late)
                self.transport.close()

    return GuardedH11Protocol


def uvicorn_options(config: ServeConfig) -> dict[str, Any]:
    """How uvicorn runs a ServeConfig (the command and the tests' real server alike)."""
    protocol = guarded_protocol(config.max_connections, config.idle_timeout,
                                config.max_connections_per_client)
    return {"http": protocol, "timeout_keep_alive": KEEP_ALIVE_S, "limit_concurrency": None,
            "server_header": False}
