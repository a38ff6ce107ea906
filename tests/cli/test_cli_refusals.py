"""Bad options are refused up front: exit code 2, one line naming the problem and the fix, no traceback,
and nothing computed or written first."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monkeysee.cli import main
from tests.conftest import folder_digest, make_dataset, private_copy
from tests.serve.conftest import build_run, photo_bytes


def refused(argv: list[str], capsys, *mentions: str) -> str:
    """Run the CLI in-process; it must exit 2 with one line of error that names the fix."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"exit code {code}, stderr: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    line = lines[0]
    assert "Traceback" not in err and line.startswith(f"monkeysee {argv[0]}: error: ")
    assert "Fix:" in line, line
    for m in mentions:
        assert m in line, f"{m!r} not in {line!r}"
    return line


class Computed(AssertionError):
    """Raised by anything a refused command must not reach."""


@pytest.fixture
def no_training(monkeypatch):
    """Building a model (the first real compute of training) fails the test."""

    def forbidden(*args, **kwargs):
        raise Computed("training built a model before refusing the options")

    monkeypatch.setattr("monkeysee.train.trainer.create_model", forbidden)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Three synthetic species, no validation/ folder."""
    return make_dataset(tmp_path_factory.mktemp("options_data"), per_class=4)


# --- train: settings checked when the config is made -------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "mentions"),
    [
        (["--unknown-detector", "bogus"], ["bogus", "max_softmax", "knn"]),
        (["--head-lr", "-1"], ["head_lr", "--head-lr"]),
        (["--workers", "-2"], ["workers", "--workers"]),
        (["--precision", "bogus"], ["precision", "bf16"]),
        (["--backbone", "alexnet9000"], ["alexnet9000", "efficientnet_lite0"]),
    ],
    ids=["unknown-detector", "head-lr", "workers", "precision", "backbone"],
)
def test_bad_train_settings_are_refused_before_anything_is_written(
    flags, mentions, data, tmp_path, capsys, no_training
):
    out = tmp_path / "run"
    refused(["train", "--data", str(data), "--out", str(out), *flags], capsys, *mentions)
    assert not out.exists()


def test_cuda_on_a_machine_without_it_is_refused(data, tmp_path, capsys, no_training, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    out = tmp_path / "run"
    refused(["train", "--data", str(data), "--out", str(out), "--device", "cuda"], capsys, "CUDA",
            "--device auto")
    assert not out.exists()


# --- train: settings checked against the data -------------------------------------------------------------


def test_no_validation_photos_at_all_is_refused(data, tmp_path, capsys, no_training):
    out = tmp_path / "run"
    refused(["train", "--data", str(data), "--out", str(out), "--val-fraction", "0"], capsys,
            "val_fraction", "--val-fraction 0.1")
    assert not (out / "splits.json").exists() and not (out / "model.safetensors").exists()


def test_a_single_species_is_refused(tmp_path, capsys, no_training):
    root = make_dataset(tmp_path / "one", per_class=4)
    for label in ("n1", "n2"):
        for f in (root / "training" / label).iterdir():
            f.unlink()
        (root / "training" / label).rmdir()
    out = tmp_path / "run"
    refused(["train", "--data", str(root), "--out", str(out)], capsys, "species")
    assert not (out / "splits.json").exists() and not (out / "model.safetensors").exists()


# --- train: an existing run is never changed ----------------------------------------------------------------


def test_training_into_an_existing_run_is_refused_and_changes_nothing(tiny_run, data, tmp_path, capsys,
                                                                      no_training):
    run = private_copy(tiny_run, tmp_path / "run")
    before = folder_digest(run)
    refused(["train", "--data", str(data), "--out", str(run)], capsys, "--resume", "--out")
    assert folder_digest(run) == before


def test_resume_with_a_different_recipe_is_refused_and_changes_nothing(tiny_run, tmp_path, capsys,
                                                                       no_training):
    run = private_copy(tiny_run, tmp_path / "run")
    before = folder_digest(run)
    refused(["train", "--resume", str(run), "--head-lr", "0.5"], capsys, "--head-lr 0.5", "half done")
    assert folder_digest(run) == before


# --- predict / evaluate / report ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.mktemp("options_run"), with_detector=False)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("options_photo") / "a.jpg"
    path.write_bytes(photo_bytes(seed=3))
    return path


@pytest.fixture
def no_prediction(monkeypatch):
    """A model pass fails the test: the options must be refused before the first photo is run."""

    def forbidden(*args, **kwargs):
        raise Computed("a photo went through the model before the options were refused")

    monkeypatch.setattr("monkeysee.predict.Predictor.forward", forbidden)


@pytest.mark.parametrize(
    "command", ["predict", "evaluate", "report"]
)
def test_bad_precision_is_refused(command, small_run, photo, tmp_path, capsys, no_prediction):
    run = private_copy(small_run, tmp_path / "run")  # evaluate and report would write into it
    before = folder_digest(run)
    extra = [str(photo)] if command == "predict" else []
    refused([command, str(run), *extra, "--precision", "bogus"], capsys, "bogus", "--precision auto")
    assert folder_digest(run) == before


@pytest.mark.parametrize(
    ("flags", "mentions"),
    [
        pytest.param(["--batch-size", "0"], ["--batch-size"], id="batch-size-0"),
        pytest.param(["--batch-size", "-3"], ["--batch-size"], id="batch-size-negative"),
        pytest.param(["--top-k", "0"], ["--top-k"], id="top-k-0"),
        pytest.param(["--cams", "/proc/nope"], ["/proc/nope"], id="cams-not-writable"),
    ],
)
def test_bad_predict_options_are_refused_before_any_photo(flags, mentions, small_run, photo, capsys,
                                                          no_prediction):
    refused(["predict", str(small_run), str(photo), *flags], capsys, *mentions)
