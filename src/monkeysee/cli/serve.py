"""`monkeysee serve`: the web page and JSON API for a trained run, on loopback unless told otherwise."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from monkeysee.cli import command

if TYPE_CHECKING:
    from threadpoolctl import threadpool_limits

    from monkeysee.serve.app import ServeConfig

PUBLIC_HOSTS = {"0.0.0.0", "::", ""}


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
    return ServeConfig(run_dir=args.run_dir, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
                       top_k=args.top_k, unknown_threshold=args.unknown_threshold,
                       max_megapixels=args.max_megapixels, max_batch=args.max_batch, precision=args.precision,
                       threads=args.threads or default_threads())


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

    from monkeysee.serve.app import create_app

    config = config_from_args(args)
    assert config.threads is not None  # config_from_args always sets it
    torch.set_num_threads(config.threads)  # process-wide, so set here at the entry point
    single_threaded_blas()
    if config.host in PUBLIC_HOSTS:
        where = config.host or "all addresses"
        print(f"monkeysee serve: warning: listening on {where}: anyone who can reach "
              "this computer can use the app. It has no login; put it behind a proxy with access control "
              "for use beyond a trusted network.", file=sys.stderr)
    check_port(config.host, config.port)
    app = create_app(config)
    shown = f"[{config.host}]" if ":" in config.host else config.host
    print(f"monkeysee serve: open http://{shown}:{config.port}/ (Ctrl+C to stop)", file=sys.stderr)
    # limit_concurrency: beyond 64 open connections, new ones get a 503 rather than piling up uploads.
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", server_header=False,
                timeout_keep_alive=5, limit_concurrency=64)
    return 0
