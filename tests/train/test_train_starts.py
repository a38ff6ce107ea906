"""Starting and resuming training from the command line: a resumed run trains on the device it is told,
small species folders train to the end, and a start that fails leaves nothing in the way of the same
command."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from monkeysee.cli import main
from monkeysee.errors import ConfigError
from monkeysee.rundir import RunDir
from monkeysee.train.trainer import Trainer
from tests.conftest import make_dataset, tiny_config

TINY = ["--views", "1", "--head-epochs", "2", "--finetune-epochs", "1", "--batch-size", "16",
        "--workers", "0"]


class Stop(KeyboardInterrupt):
    """Stands for Ctrl-C in the middle of an epoch."""


def _interrupted(cfg, out: Path, at: str) -> None:
    """Train until the log line starting with `at`, then stop as Ctrl-C would (that epoch is not saved)."""

    def log(message: str) -> None:
        if message.startswith(at):
            raise Stop

    with pytest.raises(Stop):
        Trainer(cfg, out).run(log=log)


def test_resume_with_device_cpu_trains_on_the_cpu_whatever_device_was_recorded(synthetic_data, tiny_run,
                                                                               tmp_path, monkeypatch):
    out = tmp_path / "run"
    _interrupted(tiny_config(synthetic_data, out), out, "head  2/")
    assert RunDir(out).state.read_progress()["epoch"] == 1
    recorded = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(recorded | {"device": "cuda:99"}))  # no such GPU here
    with pytest.raises(ConfigError, match="cuda:99"):
        Trainer.resume(out)  # the recorded device alone cannot train
    picked: list[str] = []
    real = Trainer.__init__

    def spy(self, cfg, run_dir, resuming=False):
        real(self, cfg, run_dir, resuming)
        picked.append(str(self.device))

    monkeypatch.setattr(Trainer, "__init__", spy)
    assert main(["train", "--resume", str(out), "--device", "cpu", "--no-evaluate"]) == 0
    assert picked == ["cpu"]
    assert RunDir(out).read_manifest().config["device"] == "cpu"
    ours = load_file(str(out / "model.safetensors"))
    reference = load_file(str(tiny_run / "model.safetensors"))
    assert all(torch.equal(ours[k], reference[k]) for k in reference)  # as if never stopped


def test_one_photo_per_species_trains_to_the_end_without_validation(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", per_class=1)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "no validation photos" in printed and "not evaluated" in printed
    manifest = RunDir(out).read_manifest()
    assert manifest.metrics["best"] == {"phase": "finetune", "epoch": 1, "val_loss": None, "val_acc": None}
    assert manifest.calibration["temperature"] == 1.0
    assert RunDir(out).load_detector(manifest).name == "knn_either"
    assert [(r["phase"], r["epoch"]) for r in RunDir(out).read_history()] == [
        ("head", 1), ("head", 2), ("finetune", 1)]


def test_one_photo_per_species_with_a_detector_calibrated_on_validation_says_what_to_do(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", per_class=1)
    out = tmp_path / "run"
    code = main(["train", "--data", str(data), "--out", str(out), *TINY, "--unknown-detector", "energy"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no species has a photo to spare for validation" in err and "--unknown-detector knn" in err
    assert not out.exists()


def test_resuming_without_validation_photos_refuses_a_detector_calibrated_on_them_before_any_epoch(
        tmp_path, capsys):
    data = make_dataset(tmp_path / "data", per_class=1)
    out = tmp_path / "run"
    cfg = tiny_config(data, out, unknown_detector="knn", val_fraction=0.1, test_fraction=0.1)
    _interrupted(cfg, out, "head  2/")
    saved = RunDir(out).state.read_progress()
    code = main(["train", "--resume", str(out), "--unknown-calibration", "val"])
    err = capsys.readouterr().err
    assert code == 2 and "no species has a photo to spare for validation" in err
    assert RunDir(out).state.read_progress() == saved  # refused before any epoch
    assert json.loads((out / "config.json").read_text())["unknown_calibration"] == "crossfit"


def test_three_photos_per_species_train_and_evaluate(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", per_class=3)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *TINY]) == 0
    counts = RunDir(out).read_summary()["counts"]
    assert {split: sum(c.values()) for split, c in counts.items()} == {"train": 3, "val": 3, "test": 3}
    assert RunDir(out).load_detector().name == "knn_either"
    assert "evaluation written to" in capsys.readouterr().out


def _fail_building_the_model(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise ConfigError("cannot download the ImageNet weights of vgg16 (offline)",
                          fix="pass --weights FILE")

    monkeypatch.setattr("monkeysee.train.trainer.create_model", offline)


def _fail_the_disk_check(monkeypatch) -> None:
    class Full:
        free = 1000

    monkeypatch.setattr("monkeysee.train.features.shutil.disk_usage", lambda path: Full())


@pytest.mark.parametrize("failure", [_fail_building_the_model, _fail_the_disk_check])
@pytest.mark.parametrize("existed", [False, True])
def test_a_start_that_fails_leaves_nothing_in_the_way_of_the_same_command(synthetic_data, tmp_path,
                                                                          monkeypatch, capsys, failure,
                                                                          existed):
    out = tmp_path / "runs" / "run"
    if existed:
        out.mkdir(parents=True)
    argv = ["train", "--data", str(synthetic_data), "--out", str(out), *TINY, "--no-evaluate"]
    with monkeypatch.context() as patch:
        failure(patch)
        assert main(argv) == 2
    assert "Fix:" in capsys.readouterr().err
    assert out.is_dir() == existed and not (existed and any(out.iterdir()))
    assert main(argv) == 0
    assert RunDir(out).is_finished()


def test_a_run_folder_that_is_a_file_is_refused_and_left_alone(synthetic_data, tmp_path, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    assert main(["train", "--data", str(synthetic_data), "--out", str(out), *TINY]) == 2
    assert "names an existing file" in capsys.readouterr().err
    assert out.read_text() == "mine"


def test_training_on_a_file_name_that_is_not_utf8_and_a_full_disk_then_resume(synthetic_data, tmp_path,
                                                                             monkeypatch, capsys):
    import monkeysee.io

    data = Path(shutil.copytree(synthetic_data, tmp_path / "data"))
    n0 = data / "training" / "n0"
    shutil.copy(next(n0.iterdir()), n0 / os.fsdecode(b"caf\xe9.jpg"))  # Latin-1 name from another system
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--views", "1", "--head-epochs", "3",
            "--finetune-epochs", "1", "--workers", "0", "--unknown-detector", "energy", "--no-evaluate"]
    real_fsync, calls = monkeysee.io.os.fsync, []

    def full_after_a_while(fd: int) -> None:
        calls.append(fd)
        if len(calls) > 8:  # splits, summary and the first epochs are on disk; then the disk fills
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(monkeysee.io.os, "fsync", full_after_a_while)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "disk full" in err and "free space and rerun the same command" in err and "Traceback" not in err
    monkeypatch.setattr(monkeysee.io.os, "fsync", real_fsync)
    assert not out.exists()  # the disk filled before the first epoch was saved: the start left nothing
    assert main(args) == 0  # the same command, as the error says
    index = RunDir(out).read_splits()
    every = {s.path for s in index.train + index.val + index.test}
    assert n0 / os.fsdecode(b"caf\xe9.jpg") in every  # the odd name is a photo like any other
    assert RunDir(out).is_finished()



def test_missing_data_folder_is_a_clear_error(tmp_path: Path, capsys):
    missing = tmp_path / "no-such-folder"
    assert main(["train", "--data", str(missing), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err == (f"monkeysee train: error: {missing}: data folder not found. "
                   "Fix: check the path passed as the data folder\n")

