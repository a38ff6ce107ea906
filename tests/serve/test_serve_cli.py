"""`monkeysee serve` options: loopback by default, a warning for 0.0.0.0, clear errors for bad values."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from monkeysee.cli import build_parser, main
from monkeysee.cli import serve as serve_cli

SINGLE_THREADED_BLAS = serve_cli.single_threaded_blas  # the real one; the fixture below stubs it


def test_numpy_blas_goes_single_threaded():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    limiter = SINGLE_THREADED_BLAS()
    try:
        assert all(p["num_threads"] == 1 for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")
    finally:
        limiter.restore_original_limits()


@pytest.fixture(autouse=True)
def threads(monkeypatch) -> list[int]:
    """The command sets torch's process-wide thread count; keep it away from the other tests."""
    calls: list[int] = []
    monkeypatch.setattr("torch.set_num_threads", calls.append)
    monkeypatch.setattr(serve_cli, "single_threaded_blas", lambda: calls.append(-1))
    return calls


@pytest.fixture
def no_server(monkeypatch):
    """Run the command up to the point where uvicorn would start; record what it was given."""
    calls: list[dict] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: calls.append({"app": app, **kw}))
    monkeypatch.setattr(serve_cli, "check_port", lambda host, port: None)
    return calls


def test_defaults_are_loopback_and_the_documented_limits(run_dir):
    args = build_parser().parse_args(["serve", str(run_dir)])
    config = serve_cli.config_from_args(args)
    assert (config.host, config.port, config.max_upload_mb, config.top_k, config.unknown_threshold) == (
        "127.0.0.1", 8000, 10.0, 3, None)
    assert config.threads == max(1, len(os.sched_getaffinity(0)) - 1)


def test_options_reach_the_app(run_dir, no_server, capsys, threads):
    assert main(["serve", str(run_dir), "--port", "8123", "--top-k", "2", "--max-upload-mb", "4",
                 "--unknown-threshold", "0.5", "--threads", "3"]) == 0
    assert threads == [3, -1]  # torch threads, then numpy's BLAS single-threaded
    (call,) = no_server
    assert (call["host"], call["port"]) == ("127.0.0.1", 8123)
    config = call["app"].state.config
    assert (config.top_k, config.max_upload_mb, config.unknown_threshold) == (2, 4.0, 0.5)
    err = capsys.readouterr().err
    assert "warning" not in err and "http://127.0.0.1:8123/" in err


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_binding_to_every_address_warns(run_dir, no_server, capsys, host):
    assert main(["serve", str(run_dir), "--host", host]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "anyone who can reach" in err


@pytest.mark.parametrize("option, value", [("--port", "0"), ("--port", "70000"), ("--top-k", "0"),
                                           ("--max-upload-mb", "-1"), ("--max-batch", "0"),
                                           ("--threads", "0")])
def test_bad_values_are_errors_not_tracebacks(run_dir, no_server, capsys, option, value):
    assert main(["serve", str(run_dir), option, value]) == 2
    assert "monkeysee serve: error:" in capsys.readouterr().err and not no_server


def test_missing_run_folder(tmp_path: Path, no_server, capsys):
    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "run folder not found" in capsys.readouterr().err


def test_port_in_use_is_reported_before_loading(run_dir, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["serve", str(run_dir), "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is already in use" in capsys.readouterr().err
