"""`monkeysee serve`: the web page and JSON API for a trained run, on loopback unless told otherwise.

Beyond loopback it needs an access token (--token or MONKEYSEE_TOKEN) unless told --no-auth. Every
option is a field of `ServeConfig`, which holds its default; uvicorn runs with the guards of
`serve.protocol` (a header deadline, per-address and total connection limits, JSON for bad requests).
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from monkeysee.cli import command

if TYPE_CHECKING:
    from threadpoolctl import threadpool_limits

    from monkeysee.serve.config import ServeConfig

TOKEN_ENV = "MONKEYSEE_TOKEN"

_HELP = {
    "host": "address to listen on (127.0.0.1: this computer only; 0.0.0.0: everyone)",
    "port": "port to listen on",
    "max_upload_mb": "largest photo accepted, in megabytes",
    "top_k": "guesses listed per photo",
    "unknown_threshold": "call a photo 'not one of my species' when its unknown score is above this "
                         "(default: the threshold calibrated at training; for a run without a detector, "
                         "it applies to 1 - the top probability)",
    "max_megapixels": "largest photo accepted, in decoded megapixels: guards against decompression bombs",
    "max_batch": "most photos answered in one forward pass when requests arrive together",
    "precision": "inference precision (auto = bf16 where the CPU has it)",
    "collection": "file of the species of this zoo or enclosure, one per line (label, common or Latin "
                  "name): a species outside it is never the answer (a request may send its own list)",
    "threads": "CPU threads for the model (default: all cores but one, which is left for receiving, "
               "decoding and answering requests)",
    "db": "the keeper's log: a SQLite file or a postgresql:// URL (default: $MONKEYSEE_DB, else "
          "RUN-log.db beside the run folder); opened on first use, so answers are served while it is down",
    "photos": "the log's photo folder (default: beside a SQLite file, else $MONKEYSEE_PHOTOS)",
    "places": "places (enclosures) offered when saving a sighting; others can be written as text",
}
_AUTH_HELP = {
    "token": f"access token every /api call must send (Authorization: Bearer TOKEN); required beyond "
             f"loopback. Prefer the {TOKEN_ENV} environment variable: other users of this computer can "
             "see command lines",
}
_LIMITS_HELP = {
    "max_decode_mb": "most memory one photo may take to decode, by its mode's bytes per pixel (a 16-bit "
                     "greyscale pixel costs more than a JPEG's); beyond: HTTP 413",
    "decode_budget_mb": "memory all photos being decoded or answered may take together; photos wait "
                        "their turn beyond it",
    "max_concurrent": "photos decoded or answered at once",
    "max_uploads": "uploads in flight (arriving, waiting or answered); beyond: HTTP 503",
    "max_uploads_per_client": "uploads in flight from one client address; beyond: HTTP 503",
    "upload_timeout": "seconds a whole upload may take to arrive; beyond: HTTP 408",
    "idle_timeout": "seconds a client may take to send its request headers, or pause in an upload",
    "max_connections": "open connections; a request on one beyond gets HTTP 503",
    "max_connections_per_client": "open connections from one client address; one more is answered "
                                  "HTTP 503 and closed",
}


def _arguments(p: argparse.ArgumentParser) -> None:
    from monkeysee.cli.options import add_options
    from monkeysee.serve.config import ServeConfig

    p.add_argument("run_dir", type=Path, help="run folder written by `monkeysee train`")
    add_options(p, ServeConfig, help=_HELP)
    auth = p.add_mutually_exclusive_group()
    add_options(auth, ServeConfig, help=_AUTH_HELP)
    auth.add_argument("--no-auth", action="store_true",
                      help="serve beyond loopback without a token (only on a network you trust)")
    limits = p.add_argument_group(
        "limits", "Memory for photos stays under a ceiling whatever is uploaded: decode budget + "
        "max-concurrent x max-upload + max-uploads x 1.06 MB + max-connections x 64 kB beyond the model's "
        "own (about 0.8 GB with the defaults); the command prints it at start.")
    add_options(limits, ServeConfig, help=_LIMITS_HELP)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The ServeConfig the options describe, checked."""
    from monkeysee.cli.options import option_values
    from monkeysee.errors import ConfigError
    from monkeysee.serve.config import ServeConfig

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(args.host) and token is None and not args.no_auth:
        where = args.host or "all addresses"
        raise ConfigError(f"--host {where} lets other computers use the app, and no access token is set",
                          fix=f"set the {TOKEN_ENV} environment variable (or pass --token), or pass "
                              "--no-auth on a network you trust")
    values = option_values(args, ServeConfig)
    threads = default_threads() if args.threads is None else args.threads
    return ServeConfig(**{**values, "token": token, "threads": threads})


def is_loopback(host: str) -> bool:
    """True for addresses only this computer can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name, or "" (all addresses): assume others can reach it
        return False


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

    from monkeysee.runtime import tune_malloc
    from monkeysee.serve.app import create_app
    from monkeysee.serve.protocol import uvicorn_options

    config = config_from_args(args)
    assert config.threads is not None  # config_from_args always sets it
    torch.set_num_threads(config.threads)  # process-wide, so set here at the entry point
    single_threaded_blas()
    tune_malloc("serving")  # photo-sized buffers go back to the OS when freed
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
