"""Faithfulness metrics on models whose behaviour is known, and the evaluation report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from monkeysee.data.layout import DataIndex, Sample
from monkeysee.data.species import Species
from monkeysee.explain.faithfulness import (
    deletion_insertion,
    drop_and_increase,
    evaluate_faithfulness,
    randomized_copy,
    rank_correlation,
)
from monkeysee.explain.photos import candidate_photos, held_out_photos, spread
from monkeysee.rundir import RunDir


class CornerModel(nn.Module):
    """Class 0's logit is the sum of the top-left 4x4 pixels of channel 0 over 4; class 1's is 0."""

    def forward(self, x):
        s = x[:, 0, :4, :4].sum(dim=(1, 2)) / 4
        return torch.stack([s, torch.zeros_like(s)], dim=1)


class ConstantModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([1.0, 0.0]))

    def forward(self, x):
        return self.bias.expand(len(x), 2)


def _corner_photo():
    x = torch.zeros(1, 3, 16, 16)
    x[:, 0, :4, :4] = 1.0
    return x


def test_auc_of_a_model_that_ignores_the_photo_is_its_probability():
    x = torch.randn(2, 3, 16, 16)
    d, i = deletion_insertion(ConstantModel(), x, torch.rand(2, 16, 16), torch.tensor([0, 1]), steps=4)
    p = 1 / (1 + math.exp(-1))
    np.testing.assert_allclose(d, [p, 1 - p], rtol=1e-6)
    np.testing.assert_allclose(i, [p, 1 - p], rtol=1e-6)


class CheckerModel(nn.Module):
    """Class 0's logit is 4 (<x, checkerboard> - 8) over the top-left 4x4 pixels: blurring destroys it."""

    checker = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2 * 2.0 - 1

    def forward(self, x):
        s = 4 * ((x[:, 0, :4, :4] * self.checker).sum(dim=(1, 2)) - 8)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def test_the_right_map_deletes_fast_and_inserts_fast():
    x = torch.zeros(1, 3, 16, 16)
    x[:, 0, :4, :4] = CheckerModel.checker
    right = torch.zeros(1, 16, 16)
    right[0, :4, :4] = 1.0
    t = torch.tensor([0])
    d_right, i_right = deletion_insertion(CheckerModel(), x, right, t, steps=16)
    d_wrong, i_wrong = deletion_insertion(CheckerModel(), x, 1 - right, t, steps=16)
    # The corner is the first 1/16 of the pixels: gone (or back) after one step with the right map.
    assert d_right[0] == pytest.approx(0.5 / 16, abs=1e-3) and d_wrong[0] == pytest.approx(
        1 - 0.5 / 16, abs=1e-3
    )
    assert i_right[0] == pytest.approx(1 - 0.5 / 16, abs=1e-3) and i_wrong[0] == pytest.approx(
        0.5 / 16, abs=1e-3
    )


def test_average_drop_and_increase():
    x = _corner_photo()
    t = torch.tensor([0])
    drop, inc = drop_and_increase(CornerModel(), x, torch.ones(1, 16, 16), t, (0, 0, 0), (1, 1, 1))
    assert drop[0] == 0 and not inc[0]  # the whole photo kept: nothing changes
    # Keeping half of each corner pixel: logit 4 -> 2, p(0) = 1/(1+e^-4) -> 1/(1+e^-2).
    drop, inc = drop_and_increase(CornerModel(), x, torch.full((1, 16, 16), 0.5), t, (0, 0, 0), (1, 1, 1))
    y, o = 1 / (1 + math.exp(-4)), 1 / (1 + math.exp(-2))
    assert drop[0] == pytest.approx((y - o) / y, rel=1e-4) and not inc[0]
    # For class 1 the same mask raises the probability: an increase in confidence, no drop.
    drop, inc = drop_and_increase(
        CornerModel(), x, torch.full((1, 16, 16), 0.5), torch.tensor([1]), (0, 0, 0), (1, 1, 1)
    )
    assert drop[0] == 0 and inc[0]


def test_rank_correlation():
    a = np.array([[0.0, 1.0], [2.0, 3.0]])
    assert rank_correlation(a, a * 5 + 1) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    # Ties share their average rank: [0, 0, 1, 2] -> ranks [0.5, 0.5, 2, 3] against [0, 1, 2, 3].
    r = np.array([0.5, 0.5, 2, 3]) - 1.5
    q = np.array([0.0, 1, 2, 3]) - 1.5
    assert rank_correlation(np.array([0, 0, 1, 2]), a) == pytest.approx(
        (r * q).sum() / math.sqrt((r * r).sum() * (q * q).sum())
    )
    assert math.isnan(rank_correlation(np.zeros(4), a))


def test_randomized_copy_leaves_the_model_and_random_state_alone(cnn):
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    rng = torch.get_rng_state()
    head = randomized_copy(cnn, "body.stage2", "head")
    top = randomized_copy(cnn, "body.stage2", "top")
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in cnn.state_dict().items():
        assert torch.equal(v, before[k])
    assert not torch.equal(head.head.fc.weight, cnn.head.fc.weight)
    assert torch.equal(head.body.stage2[0].weight, cnn.body.stage2[0].weight)
    assert not torch.equal(top.body.stage2[0].weight, cnn.body.stage2[0].weight)
    assert torch.equal(top.body.stage1[0].weight, cnn.body.stage1[0].weight)
    assert torch.equal(
        randomized_copy(cnn, "body.stage2", "head").head.fc.weight, head.head.fc.weight
    )  # seeded


def test_evaluation_report(cnn, photos, tmp_path):
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    report = evaluate_faithfulness(cnn, photos, methods=("gradcam", "eigencam"), steps=4, batch_size=2)
    assert [s.method for s in report.scores] == ["gradcam", "eigencam"]
    by = {s.method: s for s in report.scores}
    # Eigen-CAM reads only the activations, which a new head does not change: the sanity check catches it.
    assert by["eigencam"].randomization_rho_head == pytest.approx(1.0)
    assert by["gradcam"].randomization_rho_head < 0.99
    for s in report.scores:
        assert 0 <= s.deletion_auc <= 1 and 0 <= s.insertion_auc <= 1 and s.photos == 3
        assert 0 <= s.average_drop <= 100 and 0 <= s.increase_in_confidence <= 100 and s.seconds_per_photo > 0
    assert report.best in {"gradcam", "eigencam"}
    table = report.table()
    assert "most faithful for this model: " + report.best in table and "eigencam" in table
    saved = json.loads(report.save(tmp_path, {"photos": ["a"]}).read_text())
    assert saved["most_faithful"] == report.best and saved["photos"] == ["a"] and len(saved["methods"]) == 2
    for k, v in cnn.state_dict().items():
        assert torch.equal(v, before[k])


def test_photo_choice_is_spread_and_deterministic(tmp_path):
    for cls, n in (("n0", 3), ("n1", 1), ("n2", 2)):
        (tmp_path / "training" / cls).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "training" / cls / f"{cls}_{i}.jpg").write_bytes(b"x")
    (tmp_path / "monkey_labels.txt").write_text("labels")
    photos, _ = candidate_photos(None, tmp_path)
    assert [p.name for p in photos] == [
        "n0_0.jpg",
        "n1_0.jpg",
        "n2_0.jpg",
        "n0_1.jpg",
        "n2_1.jpg",
        "n0_2.jpg",
    ]
    assert spread(reversed(photos)) == photos


def test_held_out_split_of_a_run_is_preferred(tmp_path):
    data = tmp_path / "data"
    (data / "training" / "n0").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        (data / "training" / "n0" / name).write_bytes(b"x")
    run = tmp_path / "run"
    sample = {name: Sample(data / "training" / "n0" / name, 0) for name in ("a.jpg", "b.jpg")}
    index = DataIndex(root=data, species=[Species("n0", "zero")], train=[sample["a.jpg"]], val=[],
                      test=[sample["b.jpg"]])
    RunDir(run).write_splits(index)
    assert held_out_photos(run) == [data / "training" / "n0" / "b.jpg"]
    photos, source = candidate_photos(run, None)
    assert photos == [data / "training" / "n0" / "b.jpg"] and source == f"held-out split of run {run}"
    from monkeysee.errors import ConfigError

    with pytest.raises(ConfigError, match="--data"):
        candidate_photos(tmp_path, None)
