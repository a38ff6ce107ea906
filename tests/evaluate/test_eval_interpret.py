"""Interpretation from stored predictions: hand-checked values and a save/load round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monkeysee.data.species import Species
from monkeysee.errors import CheckpointError
from monkeysee.evaluate.interpret import Interpretation, TopLoss

SPECIES = (
    Species("n0", "mantled_howler", "alouatta_palliata"),
    Species("n1", "white_headed_capuchin", "cebus_capucinus"),
    Species("n2", "pygmy_marmoset", "cebuella_pygmea"),
)


def _interp(dtype: type = np.float64) -> Interpretation:
    probs = np.array([
        [0.7, 0.2, 0.1],  # true 0, right
        [0.1, 0.6, 0.3],  # true 0, said 1
        [0.2, 0.3, 0.5],  # true 1, said 2
        [0.05, 0.9, 0.05],  # true 0, said 1
        [0.3, 0.3, 0.4],  # true 2, right
    ], dtype=dtype)
    return Interpretation(probs, np.array([0, 0, 1, 0, 2]), [f"val/p{i}.jpg" for i in range(5)], SPECIES)


def test_preds_losses_and_confusion_matrix():
    it = _interp()
    np.testing.assert_array_equal(it.preds, [0, 1, 2, 1, 2])
    np.testing.assert_allclose(it.losses, -np.log([0.7, 0.1, 0.3, 0.05, 0.4]))
    np.testing.assert_array_equal(it.confusion_matrix(), [[1, 2, 0], [0, 0, 1], [0, 0, 1]])


def test_most_confused_uses_common_names_largest_first():
    it = _interp()
    assert it.most_confused() == [
        ("mantled_howler", "white_headed_capuchin", 2),
        ("white_headed_capuchin", "pygmy_marmoset", 1),
    ]
    assert it.most_confused(min_count=2) == [("mantled_howler", "white_headed_capuchin", 2)]


def test_top_losses_order_and_values():
    top = _interp().top_losses(3)
    assert [t.index for t in top] == [3, 1, 2]
    assert top[0] == TopLoss(index=3, path="val/p3.jpg", target=0, pred=1, pred_prob=0.9, target_prob=0.05,
                             loss=pytest.approx(-math.log(0.05)))
    assert (top[1].pred, top[1].pred_prob, top[1].target_prob) == (1, 0.6, 0.1)
    assert top[2].loss == pytest.approx(-math.log(0.3))
    assert not top[0].correct
    assert len(_interp().top_losses(100)) == 5
    assert [t.index for t in _interp().top_losses(2, largest=False)] == [0, 4]


def test_top_losses_keep_real_order_beyond_the_loss_clip():
    probs = np.array([[1e-20, 1.0], [0.0, 1.0], [0.5, 0.5]])
    it = Interpretation(probs, np.array([0, 0, 0]), ["a", "b", "c"], SPECIES[:2])
    top = it.top_losses(3)
    assert [t.index for t in top] == [1, 0, 2]  # p(true)=0 is worse than 1e-20, though both hit the clip
    assert top[0].loss == top[1].loss and math.isfinite(top[0].loss)


def test_rejects_inconsistent_inputs():
    probs = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="3 classes but 2 species"):
        Interpretation(probs, np.array([0, 1]), ["a", "b"], SPECIES[:2])
    with pytest.raises(ValueError, match="1 paths"):
        Interpretation(probs, np.array([0, 1]), ["a"], SPECIES)
    with pytest.raises(ValueError, match="must lie in"):
        Interpretation(probs, np.array([0, 5]), ["a", "b"], SPECIES)


@pytest.mark.parametrize("name", ["val", "val.npz", "val.json"])
def test_save_load_round_trip(tmp_path, name):
    it = _interp(np.float32)
    written = it.save(tmp_path / "val")
    assert written == tmp_path / "val.npz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val.json", "val.npz"]
    back = Interpretation.load(tmp_path / name)
    assert back.probs.dtype == np.float32
    np.testing.assert_array_equal(back.probs, it.probs)
    np.testing.assert_array_equal(back.targets, it.targets)
    assert back.paths == it.paths
    assert back.species == SPECIES
    assert back.top_losses() == it.top_losses()
    assert back.metrics() == it.metrics()


def test_load_missing_or_damaged_says_what_to_do(tmp_path):
    with pytest.raises(CheckpointError, match="run `monkeysee evaluate`"):
        Interpretation.load(tmp_path / "nothing")
    _interp().save(tmp_path / "val")
    (tmp_path / "val.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="damaged"):
        Interpretation.load(tmp_path / "val")
