"""`torchrun` runs: 2 CPU processes (gloo) on the tiny synthetic set give the 1-process result.

The launches are real: `python -m torch.distributed.run` starting `python -m monkeysee`, as a user
would, with this checkout's code on PYTHONPATH and one thread per rank (the machine has 2 cores).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from monkeysee import distributed
from monkeysee.errors import CheckpointError
from monkeysee.rundir import RunDir
from tests.conftest import REPO

# The tiny recipe of `tiny_config` as flags; batch 17 leaves a last fine-tuning batch of 1 photo, so
# with 2 ranks one of them has an empty part of it and must still join the gradient exchange.
TRAIN = ["--views", "1", "--head-epochs", "4", "--finetune-epochs", "6", "--batch-size", "17",
         "--workers", "0", "--patience", "10", "--val-fraction", "0.2", "--test-fraction", "0.2",
         "--unknown-detector", "energy", "--no-evaluate"]
TIMEOUT = 150


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(REPO / "src"), str(REPO)])
    return os.environ | {"PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*launch: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launch, "-m", "monkeysee"]


def _run(cmd: list[str], log: Path) -> None:
    with log.open("w") as out:
        rc = subprocess.run(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT, timeout=TIMEOUT).returncode
    assert rc == 0, log.read_text()[-4000:]


def _train(out: Path, data: Path, launch: list[str] | None = None, *flags: str) -> Path:
    cmd = (_torchrun(*launch) if launch else [sys.executable, "-m", "monkeysee"])
    _run([*cmd, "train", "--data", str(data), "--out", str(out), *TRAIN, *flags],
         out.parent / f"{out.name}.log")
    return out


def _two_ranks() -> list[str]:
    return ["--nproc-per-node", "2", "--master-port", str(_free_port())]


def _steps(run: Path) -> tuple[int, int]:
    """Fine-tuning optimiser steps, as the scheduler and AdamW counted them."""
    saved = RunDir(run).state.optimizer()
    assert saved is not None
    adam = {int(v["step"]) for v in saved["optimizer"]["state"].values()}
    assert len(adam) == 1
    return int(saved["scheduler"]["last_epoch"]), adam.pop()


def _test_predictions(run: Path) -> list[str]:
    from monkeysee.predict import Predictor
    from monkeysee.rundir import RunDir

    test = RunDir(run).read_splits().test
    assert test
    preds = Predictor.from_run_dir(run).predict_paths([s.path for s in test])
    return [p.best.species.label for p in preds]


def _assert_same_result(run: Path, reference: Path) -> None:
    splits = [json.loads((r / "splits.json").read_text()) for r in (run, reference)]
    assert splits[0] == splits[1]
    assert _steps(run) == _steps(reference)
    ours, theirs = (json.loads((r / "history.json").read_text()) for r in (run, reference))
    assert [(h["phase"], h["epoch"]) for h in ours] == [(h["phase"], h["epoch"]) for h in theirs]
    final, expected = ours[-1]["val_loss"], theirs[-1]["val_loss"]
    assert abs(final - expected) <= 1e-3 * abs(expected), (final, expected)
    assert _test_predictions(run) == _test_predictions(reference)


@pytest.fixture(scope="module")
def runs(synthetic_data, tmp_path_factory):
    """The 1-process reference run and its 2-process twin; both read-only for the tests."""
    root = tmp_path_factory.mktemp("distributed")
    return {"one": _train(root / "one", synthetic_data),
            # a store of its own, so the ranks encode and pool their shares instead of reading run one's
            "two": _train(root / "two", synthetic_data, _two_ranks(), "--store", str(root / "store-two"))}


# --- the helpers alone: a world of one is the plain process --------------------------------------


def test_world_of_one_helpers_are_the_identity():
    assert distributed.launched() is None or "RANK" in os.environ
    assert (distributed.rank(), distributed.size(), distributed.is_main()) == (0, 1, True)
    assert distributed.share([3, 1, 2]) == [3, 1, 2]
    assert distributed.rows_of(7) == range(7)
    assert distributed.batch_slice(5) == slice(0, 5)
    x = torch.arange(6.0).reshape(3, 2)
    assert distributed.gather_rows(x, 3) is x
    assert distributed.all_reduce_sum([1, 2.5]) == [1.0, 2.5]
    module = torch.nn.Linear(2, 2)
    assert distributed.data_parallel(module, torch.device("cpu")) is module


def test_rank_blocks_cover_every_row_once_in_rank_order(monkeypatch):
    monkeypatch.setattr(distributed, "size", lambda: 3)
    for total in (0, 1, 2, 7, 17):
        blocks = [distributed.rows_of(total, of_rank=r) for r in range(3)]
        assert [i for b in blocks for i in b] == list(range(total))
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


# --- torchrun -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_train_the_one_process_model(runs):
    _assert_same_result(runs["two"], runs["one"])
    log = (runs["two"].parent / "two.log").read_text()
    assert log.count("frozen layers:") == 1, "only rank 0 logs"


@pytest.mark.slow
def test_two_rendezvous_agents_on_loopback_train_the_same_model(runs, synthetic_data, tmp_path):
    """`--nnodes 2` with the c10d rendezvous: two agents (two "machines") of one process each."""
    endpoint = f"127.0.0.1:{_free_port()}"
    out = tmp_path / "nodes"
    launch = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
              endpoint, "--rdzv-id", "monkeysee-test"]
    cmd = [*_torchrun(*launch), "train", "--data", str(synthetic_data), "--out", str(out), *TRAIN]
    logs = [(tmp_path / f"node{i}.log").open("w") for i in range(2)]
    agents = [subprocess.Popen(cmd, env=_env(), stdout=f, stderr=subprocess.STDOUT) for f in logs]
    try:
        codes = [a.wait(timeout=TIMEOUT) for a in agents]
    finally:
        for a in agents:
            if a.poll() is None:
                a.kill()
        for f in logs:
            f.close()
    assert codes == [0, 0], "\n".join((tmp_path / f"node{i}.log").read_text()[-3000:] for i in range(2))
    _assert_same_result(out, runs["one"])


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(e[5:]) for e in env if e.startswith(b"RANK=")]
    return ranks[0] if ranks else None


@pytest.mark.slow
def test_a_rank_killed_mid_training_restarts_and_ends_with_the_uninterrupted_model(runs, synthetic_data,
                                                                                  tmp_path):
    """The plain launch (static rendezvous), whose store outlives the restart."""
    out = tmp_path / "killed"
    cmd = [*_torchrun(*_two_ranks(), "--max-restarts", "1"), "train", "--data", str(synthetic_data),
           "--out", str(out), *TRAIN]
    log = tmp_path / "killed.log"
    with log.open("w") as f:
        agent = subprocess.Popen(cmd, env=_env(), stdout=f, stderr=subprocess.STDOUT)
        try:
            progress, seen, deadline = RunDir(out).state, None, time.monotonic() + TIMEOUT
            while seen is None and agent.poll() is None and time.monotonic() < deadline:
                try:  # the first fine-tuning epoch is on disk: kill rank 1 in the middle of the next ones
                    state = progress.read_progress()
                    if state is not None and state["phase"] == "finetune":
                        seen = state
                except (CheckpointError, KeyError):
                    pass
                time.sleep(0.005)
            assert seen is not None, log.read_text()[-3000:]
            victim = next(p for p in _children(agent.pid) if _rank_of(p) == 1)
            os.kill(victim, signal.SIGKILL)
            assert agent.wait(timeout=TIMEOUT) == 0, log.read_text()[-4000:]
        finally:
            if agent.poll() is None:
                agent.kill()
    assert "finetune" not in seen["done_phases"], "the kill came after training"
    text = log.read_text()
    # The restarted group encoded nothing (every shard was finished) and went on from the last epoch.
    assert "frozen layers: 0 photos encoded" in text, text[-3000:]
    assert text.count("head  1/4") == 1 and text.count("finetune  1/6") == 1  # epoch 1 was on disk
    _assert_same_result(out, runs["one"])
    ours, theirs = (load_file(str(r / "model.safetensors")) for r in (out, runs["two"]))
    assert max((ours[k].float() - theirs[k].float()).abs().max().item() for k in ours) < 1e-5


@pytest.mark.slow
def test_two_processes_predict_the_rows_of_one_and_resume_after_a_kill(runs, synthetic_data, tmp_path):
    run, photos = runs["one"], str(synthetic_data)
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    _run([sys.executable, "-m", "monkeysee", "predict", str(run), photos, "--csv", str(one)],
         tmp_path / "p1.log")
    rows = one.read_text().splitlines()
    header, body = rows[0], sorted(rows[1:])
    assert len(body) > 20
    # A killed 2-process run: some rows in the CSV, more in rank 1's part file, ending in a cut row.
    two.write_text("\n".join([header, *body[:5]]) + "\n")
    Path(f"{two}.part1").write_text("\n".join([header, *body[5:9]]) + "\n" + body[9][:12])
    _run([*_torchrun(*_two_ranks()), "predict", str(run), photos, "--csv", str(two)], tmp_path / "p2.log")
    got = two.read_text().splitlines()
    assert got[0] == header
    assert sorted(got[1:]) == body
    assert not list(tmp_path.glob("two.csv.part*")), "the part files are merged and removed"
