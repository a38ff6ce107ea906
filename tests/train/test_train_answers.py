"""The answer ladder's thresholds as train fits them, and the manifest field that stores them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monkeysee.checkpoint import Manifest
from monkeysee.config import TrainConfig
from monkeysee.data.preprocess import Preprocess
from monkeysee.data.species import Species
from monkeysee.data.taxonomy import Taxonomy
from monkeysee.errors import CheckpointError, ConfigError
from monkeysee.models.ladder import climb, rungs
from monkeysee.rundir import RunDir
from monkeysee.train.answers import answer_ladder, crossfit_logits, described, photos_needed


def test_the_photos_needed_to_vouch_for_an_accuracy_with_one_error_added():
    assert (photos_needed(0.995), photos_needed(0.99), photos_needed(0.9)) == (199, 99, 9)


def _photos(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two well-separated species, 3 views per photo (view-major rows), 8 features."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    centre = np.where(y[:, None] == 1, 8.0, -8.0) * np.ones((n, 8))
    views = np.concatenate([centre + rng.normal(0, 0.7, (n, 8)) for _ in range(3)]).astype(np.float32)
    return views, y


def test_too_few_photos_fit_no_ladder_and_the_log_says_why():
    views, y = _photos(100)
    cfg = TrainConfig()
    assert answer_ladder(cfg, views, y, np.empty((0, 2)), np.empty(0, dtype=int), ["a", "b"], None) is None
    assert described(cfg, None, ["a", "b"], None).startswith(
        "answer ladder: fewer than 199 training and validation photos")


def test_the_log_names_the_taxa_that_are_never_an_answer():
    taxonomy = Taxonomy(("family",), {"a": ("F",), "b": ("F",), "c": ("G",)}, "hand-built")
    ladder = {"accuracy": 0.995, "ranks": ["species", "family"], "thresholds": [0.9, 0.95], "source": "x",
              "max_share": 0.5}
    assert described(TrainConfig(), ladder, ["a", "b", "c"], taxonomy) == (
        "answer ladder (99.5% right at each rank): thresholds species 0.900, family 0.950; never answered, "
        "each holding over 50% of the species: F")
    assert described(TrainConfig(), ladder | {"max_share": 1.0}, ["a", "b", "c"], taxonomy) == (
        "answer ladder (99.5% right at each rank): thresholds species 0.900, family 0.950")


def test_cross_fitted_logits_never_come_from_a_head_that_saw_the_photo():
    views, y = _photos(300)
    logits = crossfit_logits(views, y, 2, TrainConfig(head_lr=0.1), folds=2, epochs=2)
    assert logits.shape == (300, 2) and (logits.argmax(1) == y).mean() > 0.95


def test_the_fitted_ladder_answers_separable_photos_and_is_recorded(tmp_path: Path):
    views, y = _photos(300)
    val = np.eye(2)[[0, 1] * 20] * 0.98 + 0.01
    cfg = TrainConfig(answer_accuracy=0.99, head_lr=0.1)
    ladder = answer_ladder(cfg, views, y, val, np.array([0, 1] * 20), ["a", "b"], None, folds=2, epochs=2)
    assert ladder is not None
    assert (ladder["accuracy"], ladder["ranks"], len(ladder["thresholds"])) == (0.99, ["species"], 1)
    assert ladder["max_share"] == 0.5
    assert 0.5 <= ladder["thresholds"][0] <= 0.99
    answers = climb(val, rungs(["a", "b"], None), ladder["thresholds"])
    assert [a.rank for a in answers] == ["species"] * 40
    species = (Species("a", "A"), Species("b", "B"))
    manifest = Manifest(backbone="resnet18", species=species, preprocess=Preprocess(32),
                        explain_layer="body.4", ladder=ladder)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest.to_dict()))
    assert RunDir(tmp_path).read_manifest().ladder == ladder


@pytest.mark.parametrize(("ladder", "message"), [
    ({"accuracy": 0.99, "ranks": ["species"], "thresholds": [0.3], "source": "x"},
     r"'ladder' thresholds must give each of the 1 ranks a number in \[0.5, 1\]"),
    ({"accuracy": 0.99, "ranks": ["species", "genus"], "thresholds": [0.9, 0.9], "source": "x"},
     r"'ladder.ranks' must be species then the ranks of the taxonomy"),
    ({"accuracy": 1.5, "ranks": ["species"], "thresholds": [0.9], "source": "x"},
     r"'ladder' accuracy must be in \(0, 1\), not 1.5"),
    ({"accuracy": 0.99, "ranks": ["species"], "thresholds": [0.9], "source": "x", "max_share": 0},
     r"'ladder' max_share must be in \(0, 1\], not 0"),
    ({"accuracy": 0.99, "ranks": ["species"], "thresholds": [0.9], "source": "x", "share": 0.5},
     r"'ladder' must be an object of accuracy, ranks, thresholds, source and \(optionally\) max_share"),
])
def test_a_bad_ladder_is_refused_naming_the_field(tmp_path: Path, ladder: dict, message: str):
    species = (Species("a", "A"), Species("b", "B"))
    d = Manifest(backbone="resnet18", species=species, preprocess=Preprocess(32),
                 explain_layer="body.4").to_dict()
    d["ladder"] = ladder
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match=message):
        RunDir(tmp_path).read_manifest()


def test_the_target_accuracy_and_the_max_share_are_checked():
    with pytest.raises(ConfigError, match=r"answer_accuracy must be in \[0.5, 1\), not 1.0"):
        TrainConfig(answer_accuracy=1.0)
    with pytest.raises(ConfigError, match=r"answer_max_share must be in \(0, 1\], not 0.0"):
        TrainConfig(answer_max_share=0.0)
