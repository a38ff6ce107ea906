"""Training end to end on a tiny synthetic data set: the run folder, what it learns, determinism, resume
after a kill and a clean stop on SIGTERM, and the one-cycle schedule."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from monkeysee.data.layout import scan_dataset
from monkeysee.rundir import RunDir
from monkeysee.train.trainer import Trainer
from tests.conftest import tiny_config


def test_run_folder_has_everything_downstream_needs(tiny_run: Path, synthetic_data: Path):
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    for name in ["model.safetensors", "unknown.safetensors"]:  # the bytes the manifest pins
        data = (tiny_run / name).read_bytes()
        assert manifest["files"][name] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert json.loads((tiny_run / "config.json").read_text()) == manifest["config"]
    assert [s["common_name"] for s in manifest["species"]] == ["red_monkey", "green_monkey", "blue_monkey"]
    assert manifest["species"][0]["latin_name"] == "rubra_simia"
    assert manifest["backbone"] == "efficientnet_lite0"
    assert manifest["preprocess"]["input_size"] == 224 and manifest["preprocess"]["mean"] == [0.5] * 3
    assert manifest["explain_layer"] == "body.head"
    assert manifest["seed"] == 0 and manifest["config"]["views"] == 1
    assert manifest["versions"]["torch"] == torch.__version__
    index = scan_dataset(synthetic_data, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert manifest["data_fingerprint"] == index.fingerprint()
    assert manifest["unknown"]["name"] == "energy"
    history = json.loads((tiny_run / "history.json").read_text())
    assert [r["phase"] for r in history] == ["head"] * 4 + ["finetune"] * 2
    as_text = [{k: "" if v is None else str(v) for k, v in r.items()} for r in history]
    with (tiny_run / "history.csv").open(newline="") as f:
        assert list(csv.DictReader(f)) == as_text  # the same table, for a spreadsheet
    with Image.open(tiny_run / "curves.png") as curves:
        assert curves.format == "PNG"
    splits = json.loads((tiny_run / "splits.json").read_text())["splits"]
    assert sum(len(v) for v in splits["test"].values()) == 6  # 20% of 10 photos x 3 species


def test_tiny_model_learns_the_synthetic_species(tiny_run: Path):
    history = json.loads((tiny_run / "history.json").read_text())
    assert max(r["val_acc"] for r in history) == 1.0


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def test_same_seed_same_weights_other_seed_other_weights(synthetic_data: Path, tmp_path: Path):
    runs = {}
    for name, seed in [("a", 3), ("b", 3), ("c", 4)]:
        cfg = tiny_config(synthetic_data, tmp_path / name, seed=seed, head_epochs=2, finetune_epochs=1)
        runs[name] = _weights(Trainer(cfg, tmp_path / name).run(log=lambda _: None))
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def _train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "monkeysee", "train", *args]


def _cli_args(cfg_path: Path) -> list[str]:
    return ["--config", str(cfg_path), "--no-evaluate"]


def _start_training(cfg_path: Path, stderr: int) -> subprocess.Popen[str]:
    env = os.environ | {"PYTHONUNBUFFERED": "1"}  # each epoch's line reaches the pipe as it is printed
    return subprocess.Popen(_train_cmd(*_cli_args(cfg_path)), stdout=subprocess.PIPE, stderr=stderr,
                            text=True, env=env)


def _read_until_epoch(proc: subprocess.Popen[str], phase: str, epoch: int) -> None:
    """Block on the training's output until it prints the line of `epoch`: an epoch's line is printed
    before that epoch is saved, after the one before it was."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        if line.startswith(f"{phase} {epoch:>2}/"):
            return
        seen.append(line)
    raise AssertionError(f"training ended before epoch {epoch}: {''.join(seen)}")


def test_resume_after_kill_finishes_with_the_uninterrupted_result(synthetic_data: Path, tmp_path: Path):
    """SIGKILL (as in a power cut) mid-training; --resume must end with bit-identical weights."""
    changes = dict(head_epochs=40, finetune_epochs=3, patience=100)
    reference = tmp_path / "reference"
    Trainer(tiny_config(synthetic_data, reference, **changes), reference).run(log=lambda _: None)

    killed = tmp_path / "killed"
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(tiny_config(synthetic_data, killed, **changes).to_dict()))
    proc = _start_training(cfg_path, stderr=subprocess.DEVNULL)
    _read_until_epoch(proc, "head", 4)  # epoch 3 is on disk, epoch 4 may be half written
    proc.kill()
    proc.communicate()
    state = RunDir(killed).state
    assert not (killed / "manifest.json").exists(), "the kill came too late to test anything"
    done = state.read_progress()
    assert done is not None and done["phase"] == "head" and 3 <= done["epoch"] < 40

    result = subprocess.run(_train_cmd("--resume", str(killed), "--no-evaluate"), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    a, b = _weights(reference), _weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads((killed / "history.json").read_text())
    assert [(r["phase"], r["epoch"]) for r in history] == [("head", e) for e in range(1, 41)] + [
        ("finetune", e) for e in range(1, 4)]


def test_sigterm_stops_cleanly_and_says_how_to_resume(synthetic_data: Path, tmp_path: Path):
    out = tmp_path / "term"
    cfg_path = tmp_path / "cfg.json"
    cfg = tiny_config(synthetic_data, out, head_epochs=400, patience=1000)
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    proc = _start_training(cfg_path, stderr=subprocess.PIPE)
    _read_until_epoch(proc, "head", 2)  # epoch 1 is on disk
    os.kill(proc.pid, signal.SIGTERM)
    state = RunDir(out).state
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert f"monkeysee train --resume {out}" in err
    assert state.read_progress()["epoch"] >= 1


@pytest.mark.parametrize(("steps", "pct_start"), [(10, 0.1), (5, 0.2), (2, 0.5), (40, 0.1)])
def test_one_cycle_steps_through_short_schedules_and_anneals(steps: int, pct_start: float):
    """torch's OneCycleLR divides by zero where the warm-up is one step (10 epochs of one batch at 0.1)."""
    from monkeysee.train.steps import one_cycle

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = one_cycle(opt, 1.0, steps, pct_start)
    rates = []  # the rate of each batch
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(rates) >= 0.7  # near the peak at some step
    assert rates[-1] < 0.01  # and annealed to nearly nothing by the last
