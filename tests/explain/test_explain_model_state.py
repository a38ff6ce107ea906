"""Explaining leaves the model exactly as found, and fails clearly where it cannot work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from monkeysee.errors import ConfigError, MonkeyseeError
from monkeysee.explain import METHODS, ExplainError, explain, layer_activations
from monkeysee.explain.methods import Probe, method_names
from tests.explain.conftest import hook_count


def _snapshot(model: nn.Module):
    return {
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "hooks": hook_count(model),
    }


def _assert_same(before, model: nn.Module) -> None:
    after = _snapshot(model)
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    for b, a in zip(before["grads"], after["grads"], strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k
    assert after["hooks"] == before["hooks"] == 0


@pytest.mark.parametrize("method", METHODS.names())
def test_each_registered_method_maps_and_leaves_the_model_as_found(cnn, photos, method):
    """Every CAM method in the registry, alone: one (h, w) map per photo in [0, 1], and the model's
    modes, flags, .grad, weights, BatchNorm statistics and hooks exactly as they were."""
    cnn.train()
    cnn.head.eval()  # a mix of modes, to be restored module by module
    cnn.body.stage1[0].weight.requires_grad_(False)
    cnn.head.fc.weight.grad = torch.ones_like(cnn.head.fc.weight)  # an existing .grad must survive as is
    before = _snapshot(cnn)
    x = photos.clone().requires_grad_(True)
    res = explain(cnn, x, methods=(method,))[method]
    _assert_same(before, cnn)
    assert x.grad is None and torch.equal(x.detach(), photos)
    assert res.method == method and res.layer == "body.stage2"
    assert res.maps.shape == (3, 8, 8) and res.upsampled.shape == (3, 16, 16)
    assert np.isfinite(res.maps).all() and res.maps.min() >= 0.0 and res.maps.max() <= 1.0


def test_model_state_is_unchanged_by_all_methods_at_once(cnn, photos):
    cnn.train()
    cnn.head.eval()  # a mix of modes, to be restored module by module
    cnn.body.stage1[0].weight.requires_grad_(False)
    cnn.head.fc.weight.grad = torch.ones_like(cnn.head.fc.weight)  # an existing .grad must survive as is
    before = _snapshot(cnn)
    x = photos.clone().requires_grad_(True)
    explain(cnn, x, methods="all")
    layer_activations(cnn, x)
    _assert_same(before, cnn)  # includes BatchNorm running stats: explaining ran in eval mode
    assert x.grad is None and torch.equal(x.detach(), photos)


def test_maps_do_not_depend_on_the_callers_train_mode(cnn, photos):
    in_eval = explain(cnn, photos, methods=("gradcam", "eigencam"))
    cnn.train()
    in_train = explain(cnn, photos, methods=("gradcam", "eigencam"))
    for name in in_eval:
        np.testing.assert_allclose(in_train[name].maps, in_eval[name].maps, atol=1e-6)
    assert all(m.training for m in cnn.modules())


def test_hooks_are_removed_when_the_forward_pass_raises(cnn, photos):
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    cnn.head.drop = Boom()  # runs after the hooked layer
    cnn.train()
    with pytest.raises(RuntimeError, match="boom"):
        explain(cnn, photos, methods=("gradcam", "eigencam"))
    with pytest.raises(RuntimeError, match="boom"):
        layer_activations(cnn, photos)
    assert hook_count(cnn) == 0
    assert all(m.training for m in cnn.modules())
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_hooks_and_modes_are_restored_when_a_method_raises(cnn, photos, monkeypatch, method):
    def fail(*args, **kwargs):
        raise RuntimeError("chunk failed")

    monkeypatch.setattr(Probe, "score_inputs", fail)
    monkeypatch.setattr(Probe, "score_activations", fail)
    cnn.train()
    with pytest.raises(RuntimeError, match="chunk failed"):
        explain(cnn, photos, methods=(method,))
    assert hook_count(cnn) == 0 and all(m.training for m in cnn.modules())


def test_frozen_models_are_explainable_without_touching_requires_grad(cnn, photos):
    reference = explain(cnn, photos, methods=("gradcam", "layercam"))
    cnn.freeze_body(0)  # body frozen, head trainable: the transfer-learning setting
    frozen_body = explain(cnn, photos, methods=("gradcam", "layercam"))
    cnn.requires_grad_(False)  # nothing trainable at all
    frozen_all = explain(cnn, photos, methods=("gradcam", "layercam"))
    for name in reference:
        np.testing.assert_allclose(frozen_body[name].maps, reference[name].maps, atol=1e-6)
        np.testing.assert_allclose(frozen_all[name].maps, reference[name].maps, atol=1e-6)
    assert not any(p.requires_grad for p in cnn.parameters())
    assert all(p.grad is None for p in cnn.parameters())


def test_gradient_methods_work_under_no_grad(cnn, photos):
    reference = explain(cnn, photos, methods=("gradcam", "hirescam"))
    with torch.no_grad():
        inside = explain(cnn, photos, methods=("gradcam", "hirescam"))
        assert not torch.is_grad_enabled()
    for name in reference:
        np.testing.assert_allclose(inside[name].maps, reference[name].maps, atol=1e-6)
        assert inside[name].maps.max() > 0.99


GRADIENT_METHODS = [n for n, m in METHODS.items() if m.uses_gradients]
GRADIENT_FREE = [n for n, m in METHODS.items() if not m.uses_gradients]


def test_inference_mode_is_refused_for_gradient_methods_with_the_reason(cnn, photos):
    assert GRADIENT_METHODS and GRADIENT_FREE
    for name in GRADIENT_METHODS:
        with torch.inference_mode(), pytest.raises(ExplainError, match="inference_mode") as info:
            explain(cnn, photos, methods=(name,))
        assert name in str(info.value)
        assert all(free in str(info.value) for free in GRADIENT_FREE)  # says what does work


def test_gradient_free_methods_work_under_inference_mode(cnn, photos):
    reference = explain(cnn, photos, methods=GRADIENT_FREE)
    with torch.inference_mode():
        inside = explain(cnn, photos, methods=GRADIENT_FREE)
    for name in reference:
        np.testing.assert_allclose(inside[name].maps, reference[name].maps, atol=1e-6)


def test_inputs_made_under_inference_mode_can_still_be_explained(cnn, photos):
    with torch.inference_mode():
        x = photos.clone()
    res = explain(cnn, x, methods=("gradcam",))["gradcam"]
    np.testing.assert_allclose(res.maps, explain(cnn, photos)["gradcam"].maps, atol=1e-6)


def test_targets_made_under_inference_mode_can_still_be_explained(cnn, photos):
    with torch.inference_mode():
        predicted = cnn(photos).argmax(dim=1)
    res = explain(cnn, photos, methods=("gradcam",), targets=predicted)["gradcam"]
    np.testing.assert_array_equal(res.maps, explain(cnn, photos)["gradcam"].maps)


def test_unknown_layer_lists_the_stages(cnn, photos):
    with pytest.raises(ConfigError) as info:
        explain(cnn, photos, "body.stage9")
    msg = str(info.value)
    assert "body.stage9" in msg and "body.stage1" in msg and "body.stage2" in msg


def test_unknown_method_lists_the_methods(cnn, photos):
    with pytest.raises(ConfigError) as info:
        explain(cnn, photos, methods=("gradcamm",))
    assert all(name in str(info.value) for name in method_names())


def test_layer_can_be_a_module_and_a_nested_dotted_name(cnn, photos):
    by_module = explain(cnn, photos, cnn.body.stage2, ("gradcam",))["gradcam"]
    assert by_module.layer == "body.stage2"
    nested = explain(cnn, photos, "body.stage2.1", ("gradcam",))["gradcam"]  # its ReLU: same output
    np.testing.assert_allclose(nested.maps, by_module.maps, atol=1e-6)


def test_layer_that_does_not_reach_the_output_is_a_clear_error(cnn, photos):
    cnn.unused = nn.Conv2d(3, 3, 1)
    with pytest.raises(ExplainError, match="did not run"):
        explain(cnn, photos, "unused")
    assert hook_count(cnn) == 0


def test_out_of_range_target_is_a_clear_error(cnn, photos):
    with pytest.raises(MonkeyseeError, match="out of range") as info:
        explain(cnn, photos, targets=7)
    assert "0 to 3" in str(info.value)


def test_targets_per_photo(cnn, photos):
    res = explain(cnn, photos, targets=[3, 1, 2])["gradcam"]
    assert res.target_indices == (3, 1, 2)
    one = explain(cnn, photos[1:2], targets=1)["gradcam"]
    np.testing.assert_allclose(res.maps[1], one.maps[0], atol=1e-6)


def test_layer_followed_by_an_in_place_op_is_explained_as_it_outputs(cnn, photos):
    # body.stage2.0 is a conv; its ReLU may run in place on the conv's output. The map must be that of the
    # conv's own (signed) output either way, and the in-place ReLU must not fail on our gradient leaf.
    methods = ("gradcam", "hirescam", "eigencam", "ablationcam")
    reference = explain(cnn, photos, "body.stage2.0", methods)
    cnn.body.stage2[1] = nn.ReLU(inplace=True)
    in_place = explain(cnn, photos, "body.stage2.0", methods)
    for name in methods:
        np.testing.assert_allclose(in_place[name].raw, reference[name].raw, rtol=1e-5, atol=1e-6)
    assert hook_count(cnn) == 0


def test_images_must_match_the_photos(cnn, photos):
    with pytest.raises(ExplainError, match="uint8"):
        explain(cnn, photos, images=np.zeros((3, 8, 8, 3), dtype=np.uint8))


def test_forward_passes_of_other_threads_are_not_captured(cnn, photos):
    import threading

    from monkeysee.models.hooks import Capture

    capture = Capture("body.stage2", track_grad=True)
    seen = []
    with torch.no_grad():
        worker = threading.Thread(target=lambda: seen.append(capture(cnn.body.stage2, (), photos)))
        worker.start()
        worker.join()
        assert seen == [None] and capture.activation is None  # another thread: untouched
        assert capture(cnn.body.stage2, (), photos) is not None and capture.activation is not None


def test_results_are_read_only(cnn, photos):
    res = explain(cnn, photos)["gradcam"]
    with pytest.raises(ValueError, match="read-only"):
        res.maps[0, 0, 0] = 5
