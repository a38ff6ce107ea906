"""`monkeysee serve` options: loopback by default, a token beyond it, clear errors for bad values."""

from __future__ import annotations

import os
import socket
from dataclasses import fields
from pathlib import Path

import pytest

from monkeysee.cli import build_parser, main
from monkeysee.cli import serve as serve_cli
from monkeysee.serve import ServeConfig
from monkeysee.serve.protocol import KEEP_ALIVE_S

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
    monkeypatch.setattr("monkeysee.runtime.tune_malloc",
                        lambda profile="training": calls.append(-2) if profile == "serving" else None)
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


def test_every_field_of_serve_config_is_an_option_with_its_default(run_dir, monkeypatch):
    monkeypatch.delenv(serve_cli.TOKEN_ENV, raising=False)  # a token in the environment is not a default
    args = build_parser().parse_args(["serve", str(run_dir)])
    assert {f.name for f in fields(ServeConfig)} <= set(vars(args))
    assert serve_cli.config_from_args(args) == ServeConfig(run_dir, threads=serve_cli.default_threads())


def test_options_reach_the_app(run_dir, no_server, capsys, threads):
    assert main(["serve", str(run_dir), "--port", "8123", "--top-k", "2", "--max-upload-mb", "4",
                 "--unknown-threshold", "0.5", "--threads", "3"]) == 0
    assert threads == [3, -1, -2]  # torch threads, numpy's BLAS single-threaded, malloc for photos
    (call,) = no_server
    assert (call["host"], call["port"]) == ("127.0.0.1", 8123)
    config = call["app"].state.config
    assert (config.top_k, config.max_upload_mb, config.unknown_threshold) == (2, 4.0, 0.5)
    err = capsys.readouterr().err
    assert "warning" not in err and "http://127.0.0.1:8123/" in err


@pytest.fixture
def no_token_env(monkeypatch):
    monkeypatch.delenv(serve_cli.TOKEN_ENV, raising=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "myhost.local"])
def test_beyond_loopback_a_token_is_required(run_dir, no_server, capsys, host, no_token_env):
    assert main(["serve", str(run_dir), "--host", host]) == 2
    err = capsys.readouterr().err
    assert "no access token is set" in err and "MONKEYSEE_TOKEN" in err and "--no-auth" in err
    assert not no_server


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_no_auth_serves_everyone_with_a_warning(run_dir, no_server, capsys, host, no_token_env):
    assert main(["serve", str(run_dir), "--host", host, "--no-auth"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "anyone who can reach" in err
    assert no_server[0]["app"].state.config.token is None


def test_the_token_comes_from_the_option_or_the_environment(run_dir, no_server, capsys, monkeypatch):
    assert main(["serve", str(run_dir), "--host", "0.0.0.0", "--token", "from-option"]) == 0
    monkeypatch.setenv(serve_cli.TOKEN_ENV, "from-env")
    assert main(["serve", str(run_dir), "--host", "0.0.0.0"]) == 0
    assert [c["app"].state.config.token for c in no_server] == ["from-option", "from-env"]
    err = capsys.readouterr().err
    assert "warning" not in err and "from-" not in err  # the token is never printed
    assert "from-env" not in repr(no_server[1]["app"].state.config)


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("", False),
                                            ("10.0.0.1", False), ("example.org", False)])
def test_is_loopback(host, loopback):
    assert serve_cli.is_loopback(host) is loopback


def test_limits_reach_the_config_and_the_ceiling_is_printed(run_dir, no_server, capsys):
    assert main(["serve", str(run_dir), "--max-decode-mb", "100", "--decode-budget-mb", "300",
                 "--max-uploads", "10", "--upload-timeout", "20", "--idle-timeout", "4",
                 "--max-connections", "50", "--max-concurrent", "3"]) == 0
    (call,) = no_server
    c = call["app"].state.config
    assert (c.max_decode_mb, c.decode_budget_mb, c.max_uploads, c.upload_timeout, c.idle_timeout,
            c.max_connections, c.max_concurrent) == (100, 300, 10, 20, 4, 50, 3)
    assert call["limit_concurrency"] is None and call["timeout_keep_alive"] == KEEP_ALIVE_S
    assert f"photos take at most {c.memory_ceiling_bytes / 1024**2:,.0f} MB" in capsys.readouterr().err


def test_help_states_the_memory_ceiling(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Memory for photos stays under a ceiling" in out and "--max-decode-mb" in out and "--token" in out


@pytest.mark.parametrize("option, value", [("--port", "0"), ("--port", "70000"), ("--top-k", "0"),
                                           ("--max-upload-mb", "-1"), ("--max-batch", "0"),
                                           ("--threads", "0"), ("--max-uploads", "0"),
                                           ("--upload-timeout", "0"), ("--decode-budget-mb", "10")])
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


_AFTER_FREE = """
import sys
from PIL import Image
from monkeysee.runtime import tune_malloc, trim_malloc
tuned = tune_malloc(sys.argv[1])
photo = Image.new("RGB", (7100, 7030), (1, 2, 3))  # a decoded 50 MP photo: 200 MB in Pillow's blocks
del photo
if sys.argv[2] == "trim":
    trim_malloc()
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
print(tuned, rss // 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
def test_the_server_gives_photo_sized_memory_back_to_the_os():
    import subprocess
    import sys

    def after_free(profile: str, trim: str = "keep") -> tuple[str, int]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        out = subprocess.run([sys.executable, "-c", _AFTER_FREE, profile, trim], capture_output=True,
                             text=True, timeout=120, env=env)
        tuned, mb = out.stdout.split()
        return tuned, int(mb)

    tuned, serving_mb = after_free("serving")
    if tuned != "True":
        pytest.skip("not glibc: mallopt is not available")
    _, training_mb = after_free("training")
    _, trimmed_mb = after_free("training", "trim")
    assert training_mb - serving_mb > 150, (training_mb, serving_mb)  # training keeps it, the server not
    assert training_mb - trimmed_mb > 150, (training_mb, trimmed_mb)  # malloc_trim hands it back
