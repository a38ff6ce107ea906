"""`monkeysee serve`: the web page and JSON API for a trained run, on loopback unless told otherwise.

Beyond loopback it needs an access token (--token or MONKEYSEE_TOKEN) unless told --no-auth. uvicorn
runs with guards it lacks by default: a deadline for request headers and a cap on open connections
answered with a JSON 503 (see `guarded_protocol`).
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monkeysee.cli import command

if TYPE_CHECKING:
    import asyncio

    from starlette.types import Receive, Scope, Send
    from threadpoolctl import threadpool_limits

    from monkeysee.serve.app import ServeConfig

TOKEN_ENV = "MONKEYSEE_TOKEN"
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this many seconds


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="run folder written by `monkeysee train`")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this computer only; 0.0.0.0 = everyone)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    p.add_argument("--max-upload-mb", type=float, default=10.0,
                   help="largest photo accepted, in megabytes (default: 10)")
    p.add_argument("--top-k", type=int, default=3, help="guesses listed per photo (default: 3)")
    p.add_argument("--unknown-threshold", type=float, default=None, metavar="T",
                   help="call a photo 'not one of my species' when its unknown score is above T (default: "
                        "the threshold calibrated at training; for a run without a detector, T applies to "
                        "1 - the top probability)")
    p.add_argument("--max-megapixels", type=float, default=50.0,
                   help="largest photo accepted, in decoded megapixels: guards against decompression "
                        "bombs (default: 50)")
    p.add_argument("--max-batch", type=int, default=8,
                   help="most photos answered in one forward pass when requests arrive together (default: 8)")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--token", default=None,
                      help=f"access token every /api call must send (Authorization: Bearer TOKEN); required "
                           f"beyond loopback. Prefer the {TOKEN_ENV} environment variable: other users of "
                           "this computer can see command lines")
    auth.add_argument("--no-auth", action="store_true",
                      help="serve beyond loopback without a token (only on a network you trust)")
    limits = p.add_argument_group(
        "limits", "Memory for photos stays under a ceiling whatever is uploaded: decode budget + "
        "max-concurrent x max-upload + max-uploads x 1.06 MB + max-connections x 64 kB beyond the model's "
        "own (about 0.8 GB with the defaults); the command prints it at start.")
    limits.add_argument("--max-decode-mb", type=float, default=256.0,
                        help="most memory one photo may take to decode, by its mode's bytes per pixel "
                             "(a 16-bit greyscale pixel costs more than a JPEG's); beyond: HTTP 413 "
                             "(default: 256)")
    limits.add_argument("--decode-budget-mb", type=float, default=512.0,
                        help="memory all photos being decoded or answered may take together; photos wait "
                             "their turn beyond it (default: 512)")
    limits.add_argument("--max-concurrent", type=int, default=8,
                        help="photos decoded or answered at once (default: 8)")
    limits.add_argument("--max-uploads", type=int, default=128,
                        help="uploads in flight (arriving, waiting or answered); beyond: HTTP 503 "
                             "(default: 128)")
    limits.add_argument("--upload-timeout", type=float, default=60.0,
                        help="seconds a whole upload may take to arrive; beyond: HTTP 408 (default: 60)")
    limits.add_argument("--idle-timeout", type=float, default=10.0,
                        help="seconds a client may take to send its request headers, or pause in an "
                             "upload (default: 10)")
    limits.add_argument("--max-connections", type=int, default=512,
                        help="open connections; a request on one beyond gets HTTP 503 (default: 512)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="inference precision (default: auto = bf16 where the CPU has it)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the model (default: all cores but one, which is left for "
                        "receiving, decoding and answering requests)")


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The ServeConfig the options describe, checked."""
    from monkeysee.errors import ConfigError
    from monkeysee.serve.app import ServeConfig

    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a port number", fix="pass a number from 1 to 65535")
    if args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise ConfigError("--max-upload-mb and --max-megapixels must be positive",
                          fix="e.g. --max-upload-mb 10")
    if args.top_k < 1 or args.max_batch < 1 or (args.threads is not None and args.threads < 1):
        raise ConfigError("--top-k, --max-batch and --threads must be at least 1", fix="e.g. --top-k 3")
    if min(args.max_concurrent, args.max_uploads, args.max_connections) < 1:
        raise ConfigError("--max-concurrent, --max-uploads and --max-connections must be at least 1",
                          fix="e.g. --max-uploads 128")
    if min(args.upload_timeout, args.idle_timeout, args.max_decode_mb) <= 0:
        raise ConfigError("--upload-timeout, --idle-timeout and --max-decode-mb must be positive",
                          fix="e.g. --upload-timeout 60")
    if args.decode_budget_mb < args.max_decode_mb:
        raise ConfigError(f"--decode-budget-mb {args.decode_budget_mb:g} is smaller than --max-decode-mb "
                          f"{args.max_decode_mb:g}, so the largest photo allowed could never be decoded",
                          fix="raise --decode-budget-mb or lower --max-decode-mb")
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(args.host) and token is None and not args.no_auth:
        where = args.host or "all addresses"
        raise ConfigError(f"--host {where} lets other computers use the app, and no access token is set",
                          fix=f"set the {TOKEN_ENV} environment variable (or pass --token), or pass "
                              "--no-auth on a network you trust")
    return ServeConfig(run_dir=args.run_dir, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
                       top_k=args.top_k, unknown_threshold=args.unknown_threshold,
                       max_megapixels=args.max_megapixels, max_batch=args.max_batch,
                       max_concurrent=args.max_concurrent, max_decode_mb=args.max_decode_mb,
                       decode_budget_mb=args.decode_budget_mb, max_uploads=args.max_uploads,
                       upload_timeout=args.upload_timeout, idle_timeout=args.idle_timeout,
                       max_connections=args.max_connections, token=token, precision=args.precision,
                       threads=args.threads or default_threads())


def is_loopback(host: str) -> bool:
    """True for addresses only this computer can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name, or "" (all addresses): assume others can reach it
        return False


def _raw_json_response(status: int, reason: str, code: str, detail: str, fix: str) -> bytes:
    """A whole HTTP/1.1 response, for answering below the ASGI app (it closes the connection)."""
    body = json.dumps({"error": code, "detail": detail, "fix": fix}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + body


def guarded_protocol(max_connections: int, header_timeout: float) -> type:
    """uvicorn's h11 protocol with the two guards it lacks. Headers: a client must send each request's
    headers within `header_timeout` seconds of connecting or of its last answer (a client trickling them
    would otherwise hold its connection for ever); else a JSON 408 and the connection closes. Connections:
    a request on a connection beyond `max_connections` gets a JSON 503 (uvicorn's own limit answers
    plain text, and counts slow and idle connections against every other request)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    late = _raw_json_response(408, "Request Timeout", "timeout",
                              f"the request headers did not arrive within {header_timeout:g} seconds",
                              "send the whole request promptly")
    busy_body = json.dumps({"error": "busy", "detail": "the server has too many open connections",
                            "fix": "try again in a few seconds"}).encode()

    async def busy(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(busy_body)).encode()),
            (b"retry-after", b"2"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": busy_body})

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self.app = busy
            self._expect_headers()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._expect_headers()

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
    """How uvicorn runs a ServeConfig (shared by the command and the tests' real server)."""
    return {"http": guarded_protocol(config.max_connections, config.idle_timeout),
            "timeout_keep_alive": KEEP_ALIVE_S, "limit_concurrency": None, "server_header": False}


def default_threads() -> int:
    """All usable cores but one: on a small machine the model's threads and the request threads
    (HTTP, decoding, PNG encoding) otherwise take turns on the same cores and every batch waits."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def single_threaded_blas() -> threadpool_limits | None:
    """One thread for numpy's BLAS (the unknown detectors' matrix products): requests already run in
    parallel, and BLAS thread pools called from several request threads at once stall each other.
    Returns the limiter (its `restore_original_limits()` undoes it), or None without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(1, user_api="blas")


_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_M_TRIM_THRESHOLD = -1
MMAP_THRESHOLD = 16 * 1024 * 1024


def release_photo_memory() -> bool:
    """Let glibc give photo-sized buffers back to the OS as soon as they are freed.

    The command line tunes malloc for training (never mmap, never trim: freed tensor buffers are kept
    for the next step). A server decoding photos of every size then keeps its highest water mark for
    ever, and each request thread's arena keeps its own, so resident memory climbs far past the photos
    in flight and the memory ceiling means nothing. Here blocks of `MMAP_THRESHOLD` and more (Pillow
    allocates images in 16 MB blocks) are mapped and unmapped again; the model's smaller activation
    buffers still come from the heap. Returns False off glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 65536) == 1  # glibc's default
        ok &= libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1  # fixed: no dynamic growth
        ok &= libc.mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD) == 1
        return bool(ok)
    except (OSError, AttributeError):
        return False


def check_port(host: str, port: int) -> None:
    """Fail with a clear message, before the model loads, when the address cannot be bound."""
    from monkeysee.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is already in use",
                                  fix="stop the other server or pass another --port") from None
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror})",
                              fix="pass --host 127.0.0.1 or another --port") from None


@command("serve", help="Serve a trained run as a web page and JSON API (this computer only by default).",
         arguments=_arguments, order=70)
def run(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from monkeysee.serve.app import create_app

    config = config_from_args(args)
    assert config.threads is not None  # config_from_args always sets it
    torch.set_num_threads(config.threads)  # process-wide, so set here at the entry point
    single_threaded_blas()
    release_photo_memory()
    if not is_loopback(config.host) and config.token is None:
        where = config.host or "all addresses"
        print(f"monkeysee serve: warning: listening on {where} with --no-auth: anyone who can reach "
              "this computer can use the app. Use it only on a network you trust.", file=sys.stderr)
    check_port(config.host, config.port)
    app = create_app(config)
    shown = f"[{config.host}]" if ":" in config.host else config.host
    print(f"monkeysee serve: open http://{shown}:{config.port}/ (Ctrl+C to stop)", file=sys.stderr)
    if config.token is not None:
        print("monkeysee serve: the page and /api ask for the access token (not shown here)", file=sys.stderr)
    print(f"monkeysee serve: photos take at most {config.memory_ceiling_bytes / 1024**2:,.0f} MB beyond the "
          "model (see --help, limits)", file=sys.stderr)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", **uvicorn_options(config))
    return 0
