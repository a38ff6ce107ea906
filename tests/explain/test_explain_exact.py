"""Every CAM method on tiny hand-weighted networks, against maps worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monkeysee.explain import explain

ROOT2 = math.sqrt(2.0)


def _maps(model, x, method, target=None, layer="body.stage1"):
    return explain(model, x, layer, (method,), target)[method]


# gap model, target class 0: W0 = (2, -1), h*w = 4, so every gradient is (0.5, -0.25).
# Grad-CAM: 0.5*A0 - 0.25*A1 = [[0.5, 0.75], [-0.75, 0.5]] -> ReLU -> / 0.75.
# HiResCAM and XGrad-CAM equal Grad-CAM when gradients are constant over positions.
# LayerCAM and Grad-CAM++ keep positive gradients only: 0.5*A0 -> / 1 (Grad-CAM++:
#   alpha = g^2 / (2 g^2 + sum(A0) g^3) = 0.25 / (0.5 + 4 * 0.125) = 1/4, weight = 4 * alpha * 0.5 = 0.5).
# Ablation-CAM: zeroing A0 gives logit 0 - 1 = -1, zeroing A1 gives 2: weights (1 - (-1))/1 = 2 and
#   (1 - 2)/1 = -1, so 2*A0 - A1 = [[2, 3], [-3, 2]] -> ReLU -> / 3: again Grad-CAM's map.
TWO_THIRDS = [[2 / 3, 1.0], [0.0, 2 / 3]]
HALF_A0 = [[0.5, 1.0], [0.0, 0.5]]


@pytest.mark.parametrize(
    ("method", "expected", "raw"),
    [
        ("gradcam", TWO_THIRDS, [[0.5, 0.75], [0.0, 0.5]]),
        ("hirescam", TWO_THIRDS, [[0.5, 0.75], [0.0, 0.5]]),
        ("xgradcam", TWO_THIRDS, [[0.5, 0.75], [0.0, 0.5]]),
        ("layercam", HALF_A0, [[0.5, 1.0], [0.0, 0.5]]),
        ("gradcam++", HALF_A0, [[0.5, 1.0], [0.0, 0.5]]),
        ("ablationcam", TWO_THIRDS, [[2.0, 3.0], [0.0, 2.0]]),
    ],
)
def test_channel_weighted_methods_match_hand_computation(gap, gap_input, method, expected, raw):
    res = _maps(gap, gap_input, method)
    np.testing.assert_allclose(res.raw[0], raw, atol=1e-6)
    np.testing.assert_allclose(res.maps[0], expected, atol=1e-5)
    assert res.target_indices == (0,)
    assert res.target_logits == pytest.approx((1.0,))
    assert res.target_probabilities == pytest.approx((1 / (1 + math.exp(-1)),))


def test_gradcam_for_the_other_class(gap, gap_input):
    # W1 = (-1, 1): 0.25 * (A1 - A0) = [[-0.25, -0.25], [0.75, -0.25]] -> ReLU -> only (1, 0) stays.
    res = _maps(gap, gap_input, "gradcam", target=1)
    np.testing.assert_allclose(res.maps[0], [[0, 0], [1, 0]], atol=1e-6)
    np.testing.assert_allclose(res.raw[0], [[0, 0], [0.75, 0]], atol=1e-6)
    assert res.target_indices == (1,)
    assert res.predicted_indices == (0,)


def test_scorecam_matches_hand_computation(gap, gap_input):
    # Masks: A0 / 2 = [[.5, 1], [0, .5]] and A1 / 3 = [[0, 1/3], [1, 0]] (layer = input resolution).
    # Photo * mask0: channel means (0.5+2+0+0.5)/4 = 3/4 and 1/4 -> logit0 = 2*3/4 - 1/4 = 1.25.
    # Photo * mask1: channel means (2/3)/4 = 1/6 and (1/3+3)/4 = 5/6 -> logit0 = 2/6 - 5/6 = -0.5.
    w0 = 1 / (1 + math.exp(-1.75))
    w1 = 1 - w0
    raw = np.array([[w0, 2 * w0 + w1], [3 * w1, w0]])
    expected = (raw - raw.min()) / (raw.max() - raw.min())
    res = _maps(gap, gap_input, "scorecam")
    np.testing.assert_allclose(res.raw[0], raw, atol=1e-6)
    np.testing.assert_allclose(res.maps[0], expected, atol=1e-5)


def test_eigencam_matches_hand_computation(gap, gap_input):
    # Positions x channels, centred: (0,-1), (1,0), (-1,2), (0,-1). Covariance [[2,-2],[-2,6]] has top
    # eigenvector v ~ (1, -(1+sqrt2)); projections (1+sqrt2, 1, -3-2sqrt2, 1+sqrt2) / |v|. They anti-
    # correlate with the channel-mean map [[.5,1.5],[1.5,.5]], so the sign flips: only (1, 0) is positive.
    norm = math.sqrt(1 + (1 + ROOT2) ** 2)
    res = _maps(gap, gap_input, "eigencam")
    np.testing.assert_allclose(res.raw[0], [[0, 0], [(3 + 2 * ROOT2) / norm, 0]], atol=1e-6)
    np.testing.assert_allclose(res.maps[0], [[0, 0], [1, 0]], atol=1e-6)


def test_gradient_methods_with_gradients_that_vary_over_positions(build):
    # stage2 = ReLU(M A + b): d logit0 / dA_k = sum_m W0m / 4 * [Z_m > 0] * M_mk, worked out in numpy.
    mix, bias, fc = [[1.0, -1.0], [0.5, 1.0]], [0.0, -1.0], [[1.0, 2.0], [-1.0, 1.0]]
    model = build["two_stage"](mix, bias, fc)
    a = np.array([[[1.0, 2.0], [0.0, 1.0]], [[0.0, 1.0], [3.0, 0.0]]])
    z = np.einsum("mk,khw->mhw", np.array(mix), a) + np.array(bias)[:, None, None]
    g = np.einsum("m,mhw,mk->khw", np.array(fc[0]) / 4, (z > 0).astype(float), np.array(mix))
    np.testing.assert_allclose(g, [[[0.25, 0.5], [0.25, 0.25]], [[-0.25, 0.25], [0.5, -0.25]]])
    s = a.sum(axis=(1, 2), keepdims=True)
    alpha = np.where(g != 0, g**2 / (2 * g**2 + s * g**3), 0)
    expected = {
        "gradcam": np.einsum("k,khw->hw", g.mean(axis=(1, 2)), a),
        "hirescam": (g * a).sum(0),
        "layercam": (np.maximum(g, 0) * a).sum(0),
        "xgradcam": np.einsum("k,khw->hw", (g * a).sum(axis=(1, 2)) / s[:, 0, 0], a),
        "gradcam++": np.einsum("k,khw->hw", (alpha * np.maximum(g, 0)).sum(axis=(1, 2)), a),
    }
    np.testing.assert_allclose(expected["hirescam"], [[0.25, 1.25], [1.5, 0.25]])
    results = explain(model, torch.tensor(a, dtype=torch.float32)[None], "body.stage1", list(expected))
    for name, raw in expected.items():
        raw = np.maximum(raw, 0)
        np.testing.assert_allclose(results[name].raw[0], raw, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(
            results[name].maps[0], (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-5, err_msg=name
        )


def test_maps_are_in_unit_range_and_upsampled_to_the_input(cnn, photos):
    results = explain(cnn, photos, methods="all")
    assert set(results) == {
        "gradcam",
        "gradcam++",
        "xgradcam",
        "hirescam",
        "layercam",
        "eigencam",
        "scorecam",
        "ablationcam",
    }
    for res in results.values():
        assert res.layer == "body.stage2"  # the default: the last body stage
        assert res.maps.shape == (3, 8, 8) and res.upsampled.shape == (3, 16, 16)
        for maps in (res.maps, res.upsampled):
            assert maps.min() >= 0 and maps.max() <= 1 and np.isfinite(maps).all()
            assert all(m.max() > 0.99 or m.max() == 0 for m in maps)


def test_all_zero_map_stays_zero_not_nan(gap):
    # Target class 1 on a photo with only channel 0 lit: Grad-CAM is -0.25 * A0 -> ReLU -> all zero.
    x = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    res = _maps(gap, x, "gradcam", target=1)
    assert np.array_equal(res.maps, np.zeros((1, 2, 2))) and np.array_equal(
        res.upsampled, np.zeros((1, 2, 2))
    )


def test_a_photo_gets_the_same_map_alone_or_in_a_batch(cnn, photos):
    together = explain(cnn, photos, methods=("gradcam", "scorecam"))
    alone = explain(cnn, photos[1:2], methods=("gradcam", "scorecam"))
    for name in together:
        np.testing.assert_allclose(together[name].maps[1], alone[name].maps[0], atol=1e-5)


def test_ablation_through_the_tail_equals_ablation_through_the_whole_model(cnn, photos):
    # A Classifier stage uses the shortcut (only the layers after it run); a plain Sequential wrapper of the
    # same modules cannot, and runs the whole model with the layer's output replaced. Same numbers.
    from torch import nn

    class Wrapped(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    fast = explain(cnn, photos, "body.stage1", ("ablationcam",))["ablationcam"]
    slow = explain(Wrapped(cnn), photos, "inner.body.stage1", ("ablationcam",), chunk_size=3)["ablationcam"]
    np.testing.assert_allclose(fast.raw, slow.raw, rtol=1e-4, atol=1e-5)


def test_chunk_size_does_not_change_perturbation_maps(cnn, photos):
    big = explain(cnn, photos, methods=("scorecam", "ablationcam"), chunk_size=64)
    small = explain(cnn, photos, methods=("scorecam", "ablationcam"), chunk_size=5)
    for name in big:
        np.testing.assert_allclose(big[name].raw, small[name].raw, rtol=1e-4, atol=1e-6)
