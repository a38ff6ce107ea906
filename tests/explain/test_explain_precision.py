"""`precision`: bf16 passes give the fp32 maps up to bf16 rounding, fp32 stays exact, the model is untouched.

The bounds were measured first (Sapphire Rapids-class CPU with AMX, torch 2.14) and set with margin:

* EfficientNet-Lite0 (bundled ImageNet weights), 224 px, 16 smooth synthetic photos, layer body.head (7x7),
  targets fixed to the fp32 predictions: worst max |bf16 - fp32| of a min-max scaled gradient-method map
  0.072, worst per-photo Pearson 0.9955, Spearman 0.990. On real monkey photos the worst max |diff| was
  0.037 (Lite0) and 0.006 (VGG16, random weights). Eigen-CAM is left out there: where the first two
  singular values nearly tie, any rounding can swap the principal component (one photo: 0.27).
* The conftest CNNs, every method: worst max |diff| 0.067 (Eigen-CAM), Score-CAM 0.040, Pearson 0.9979,
  Spearman 0.997.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from monkeysee.errors import ConfigError
from monkeysee.explain import Explainer, explain, method_names
from monkeysee.explain.faithfulness import evaluate_faithfulness, rank_correlation
from monkeysee.models import create_model, get_backbone
from monkeysee.models.forward import forward_pass
from monkeysee.models.hooks import resolve_layer
from monkeysee.runtime import bf16_supported
from tests.explain.conftest import hook_count

needs_bf16 = pytest.mark.skipif(
    not bf16_supported(), reason="this CPU has no native bf16 (AVX512-BF16 / AMX); autocast would be emulated"
)

GRADIENT_METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")


def smooth_photos(n: int, size: int, seed: int) -> torch.Tensor:
    """Photo-like inputs: large smooth colour blobs plus a little pixel noise (normalised scale)."""
    g = torch.Generator().manual_seed(seed)
    blobs = F.interpolate(torch.randn(n, 3, 6, 6, generator=g), size=(size, size), mode="bicubic")
    return blobs + 0.1 * torch.randn(n, 3, size, size, generator=g)


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Max |a - b| over all maps, and the lowest per-map Pearson and Spearman correlations."""
    pearson = min(float(np.corrcoef(p.ravel(), q.ravel())[0, 1]) for p, q in zip(a, b, strict=True))
    spearman = min(rank_correlation(p, q) for p, q in zip(a, b, strict=True))
    return float(np.abs(a - b).max()), pearson, spearman


def both(model: nn.Module, x: torch.Tensor, methods, layer=None):
    """fp32 maps, and bf16 maps explaining the same classes (a class flip would compare two questions)."""
    exact = explain(model, x, layer, methods, precision="fp32")
    targets = list(exact[next(iter(exact))].target_indices)
    return exact, explain(model, x, layer, methods, targets, precision="bf16")


@pytest.fixture(scope="module")
def lite0_maps():
    model = create_model("efficientnet_lite0", pretrained=True).eval()
    x = torch.cat([smooth_photos(4, 224, seed) for seed in range(4)])
    return both(model, x, GRADIENT_METHODS)


@needs_bf16
@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_bf16_maps_agree_with_fp32_on_efficientnet_lite0(lite0_maps, method):
    exact, fast = lite0_maps
    assert fast[method].precision == "bf16" and exact[method].precision == "fp32"
    diff, pearson, spearman = agreement(exact[method].upsampled, fast[method].upsampled)
    assert diff <= 0.15
    assert pearson >= 0.99
    assert agreement(exact[method].maps, fast[method].maps)[2] >= 0.98 and spearman >= 0.98
    assert np.abs(exact[method].upsampled - fast[method].upsampled).mean() <= 0.02
    np.testing.assert_allclose(fast[method].target_logits, exact[method].target_logits, rtol=0.05, atol=0.1)


@needs_bf16
@pytest.mark.parametrize("seed", range(4))
def test_bf16_maps_agree_with_fp32_for_every_method_on_small_cnns(build, seed):
    model = build["small_cnn"](seed=seed)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    exact, fast = both(model, x, "all")
    for method in method_names():
        diff, pearson, spearman = agreement(exact[method].upsampled, fast[method].upsampled)
        assert diff <= 0.12, method
        assert pearson >= 0.99 and spearman >= 0.99, method


@needs_bf16
def test_bf16_actually_runs_in_bf16_and_returns_float32(cnn, photos):
    exact, fast = both(cnn, photos, ("gradcam", "scorecam"))
    for method in ("gradcam", "scorecam"):
        assert fast[method].maps.dtype == fast[method].raw.dtype == np.float32
        assert not np.array_equal(fast[method].raw, exact[method].raw)  # else autocast never took effect


@needs_bf16
def test_gradients_under_autocast_are_taken_at_the_layer_and_cast_to_float32(cnn, photos):
    layer = resolve_layer(cnn, None)
    exact = forward_pass(cnn, photos, layer=layer, gradients=True, precision="fp32")
    fast = forward_pass(cnn, photos, layer=layer, targets=exact.targets, gradients=True, precision="bf16")
    assert fast.activation.dtype == fast.gradients.dtype == fast.logits.dtype == torch.float32
    assert not fast.gradients.requires_grad and not fast.activation.requires_grad
    scale = exact.gradients.abs().max()
    assert (fast.gradients - exact.gradients).abs().max() <= 0.02 * scale
    assert all(p.grad is None for p in cnn.parameters())


def _state(model: nn.Module):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [(p.dtype, p.requires_grad, p.grad) for p in model.parameters()],
    )


@needs_bf16
def test_bf16_leaves_the_model_and_the_autocast_state_as_found(cnn, photos):
    cnn.train()
    state, modes, params = _state(cnn)
    explain(cnn, photos, methods="all", precision="bf16")
    after_state, after_modes, after_params = _state(cnn)
    assert all(torch.equal(after_state[k], v) and after_state[k].dtype == v.dtype for k, v in state.items())
    assert after_modes == modes
    assert after_params == params and all(dtype == torch.float32 for dtype, _, _ in after_params)
    assert not torch.is_autocast_enabled("cpu") and torch.is_grad_enabled()
    assert hook_count(cnn) == 0


@needs_bf16
def test_autocast_is_off_again_when_a_bf16_pass_raises(cnn, photos):
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    cnn.head.drop = Boom()
    for method in ("gradcam", "scorecam"):
        with pytest.raises(RuntimeError, match="boom"):
            explain(cnn, photos, methods=method, precision="bf16")
        assert not torch.is_autocast_enabled("cpu") and torch.is_grad_enabled()
        assert hook_count(cnn) == 0


def test_fp32_is_bit_identical_to_the_default_call(cnn, photos):
    default = explain(cnn, photos, methods="all")
    fp32 = explain(cnn, photos, methods="all", precision="fp32")
    for method, res in default.items():
        for field in ("maps", "upsampled", "raw"):
            assert np.array_equal(getattr(fp32[method], field), getattr(res, field)), (method, field)
        assert fp32[method].target_logits == res.target_logits
        assert res.precision == fp32[method].precision == "fp32"
        assert fp32[method].to_dict()["precision"] == "fp32"


def test_the_explainer_defaults_to_exact_fp32_and_resolves_auto(cnn, photos):
    pre = get_backbone("efficientnet_lite0").preprocess
    assert Explainer(cnn, pre).precision == "fp32"
    assert Explainer(cnn, pre, precision="auto").precision == ("bf16" if bf16_supported() else "fp32")
    with pytest.raises(ConfigError, match="precision"):
        Explainer(cnn, pre, precision="half")
    with pytest.raises(ConfigError, match="precision"):
        explain(cnn, photos, precision="fp16")


def test_auto_resolves_like_prediction_does(cnn, photos):
    res = explain(cnn, photos, methods="gradcam", precision="auto")["gradcam"]
    assert res.precision == ("bf16" if bf16_supported() else "fp32")


@needs_bf16
def test_faithfulness_runs_and_records_its_precision(cnn, photos):
    report = evaluate_faithfulness(cnn, photos, methods=("gradcam",), steps=2, precision="bf16")
    assert report.precision == "bf16" and report.to_dict()["precision"] == "bf16"
    assert "bf16 passes" in report.table()
    assert evaluate_faithfulness(cnn, photos, methods=("gradcam",), steps=2).precision == "fp32"
