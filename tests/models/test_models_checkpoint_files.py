"""A run's checkpoint files: written and read back they give the very same predictions; a damaged,
missing or foreign file is refused with its path named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from monkeysee.data.images import load_rgb
from monkeysee.errors import CheckpointError
from monkeysee.predict import Predictor
from monkeysee.rundir import UNKNOWN, WEIGHTS, RunDir, load_run
from tests.conftest import private_copy


def test_checkpoint_round_trip_gives_identical_predictions(tiny_run, tmp_path: Path, synthetic_data: Path):
    photos = sorted((synthetic_data / "training").rglob("*.jpg"))[:8]
    first = load_run(tiny_run)
    copy = tmp_path / "copy"
    RunDir(copy).save_checkpoint(first.model, first.manifest, RunDir(tiny_run).load_detector())
    second = load_run(copy)
    checkpoint = {n: pin for n, pin in first.manifest.files.items() if n in (WEIGHTS, UNKNOWN)}
    assert second.manifest.files == checkpoint  # the same bytes, pinned the same (the evidence stays behind)
    a = Predictor(first, precision="fp32", channels_last=False)
    b = Predictor(second, precision="fp32", channels_last=False)
    x = torch.stack([a.transform(load_rgb(p)) for p in photos])
    la, fa = a.logits_and_features(x)
    lb, fb = b.logits_and_features(x)
    assert torch.equal(la, lb) and torch.equal(fa, fb)
    assert [p.to_dict() | {"evidence": None} for p in a.predict_paths(photos)] == \
        [p.to_dict() for p in b.predict_paths(photos)]



@pytest.mark.parametrize(("name", "damage", "expected"), [
    (UNKNOWN, lambda p: p.write_bytes(p.read_bytes()[:-4]), "unknown.safetensors does not match manifest"),
    (UNKNOWN, lambda p: p.unlink(), "unknown.safetensors is missing"),
    (WEIGHTS, lambda p: p.write_bytes(p.read_bytes()[:-10]), "model.safetensors does not match manifest"),
])
def test_a_damaged_checkpoint_file_is_named(tiny_run, tmp_path, name, damage, expected):
    run = private_copy(tiny_run, tmp_path / "run")
    damage(run / name)
    with pytest.raises(CheckpointError, match=expected) as info:
        Predictor.from_run_dir(run)
    assert info.value.path == str(run / name)


def test_a_detector_from_another_run_is_refused(tiny_run, tmp_path):
    run = private_copy(tiny_run, tmp_path / "run")
    save_file({"unknown.bank": np.ones((4, 8), dtype=np.float32)}, str(run / UNKNOWN))  # another run's
    with pytest.raises(CheckpointError, match="from another run"):
        Predictor.from_run_dir(run)

