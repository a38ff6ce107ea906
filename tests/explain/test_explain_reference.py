"""Agreement with pytorch-grad-cam (grad-cam 1.5.7) on the same model, photos and targets.

Both sides are min-max scaled per map. Where the reference differs on purpose, the comparison is set up
so that the difference cannot matter, and the reason is given:

* Its resize is cv2 INTER_LINEAR per image; ours is one batched torch bilinear resize with the same
  half-pixel centres, so upsampled maps are compared directly.
* Grad-CAM++ adds 1e-6 to alpha's denominator and XGrad-CAM 1e-7 to the channel sum; we add none.
  The model's head is scaled so gradients are O(0.1-1), where those epsilons are below 1e-4.
* Its Score-CAM upsamples masks with align_corners=True, ours with align_corners=False (as every other
  resize here); it is compared on a stride-1 model, where the layer has the input's size and both
  resizes are the identity.
* Eigen-CAM: an SVD fixes the principal component only up to sign. The reference takes LAPACK's sign,
  we take the one that agrees with the mean activation. We check that the reference equals our map
  drawn with whichever sign it took, and that ours always takes the agreeing sign.
* Ablation-CAM: it replaces ablated channels by min - 1e7 when the layer can be negative; at a ReLU layer
  (as here) both set them to 0, the paper's definition.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monkeysee.explain import explain
from monkeysee.explain.engine import normalize01, upsample
from monkeysee.explain.methods import principal_projection

cam = pytest.importorskip("pytorch_grad_cam", reason="pytorch-grad-cam (test extra) is not installed")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

REFERENCE = {
    "gradcam": cam.GradCAM,
    "gradcam++": cam.GradCAMPlusPlus,
    "xgradcam": cam.XGradCAM,
    "hirescam": cam.HiResCAM,
    "layercam": cam.LayerCAM,
    "eigencam": cam.EigenCAM,
    "scorecam": cam.ScoreCAM,
    "ablationcam": cam.AblationCAM,
}
TOLERANCE = 1e-4


def _reference(model, x, layer_module, method, targets):
    with REFERENCE[method](model=model, target_layers=[layer_module]) as ref:
        return ref(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])


@pytest.mark.parametrize("layer", ["body.stage1", "body.stage2"])
@pytest.mark.parametrize(
    "method", ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "ablationcam"]
)
def test_matches_pytorch_grad_cam(build, photos, method, layer):
    model = build["small_cnn"](seed=3, fc_scale=100.0)
    ours = explain(model, photos, layer, (method,))[method]
    theirs = _reference(model, photos, dict(model.named_modules())[layer], method, ours.target_indices)
    assert theirs.shape == ours.upsampled.shape
    assert np.abs(ours.upsampled - theirs).max() <= TOLERANCE


def test_scorecam_matches_pytorch_grad_cam_at_input_resolution(build, photos):
    model = build["small_cnn"](seed=4, stride=1)
    ours = explain(model, photos, "body.stage2", ("scorecam",))["scorecam"]
    assert ours.maps.shape[-2:] == photos.shape[-2:]
    theirs = _reference(model, photos, model.body.stage2, "scorecam", ours.target_indices)
    assert np.abs(ours.upsampled - theirs).max() <= TOLERANCE


@pytest.mark.parametrize("layer", ["body.stage1", "body.stage2"])
def test_eigencam_matches_pytorch_grad_cam_up_to_the_sign_of_the_component(build, photos, layer):
    model = build["small_cnn"](seed=5)
    ours = explain(model, photos, layer, ("eigencam",))["eigencam"]
    theirs = _reference(model, photos, dict(model.named_modules())[layer], "eigencam", ours.target_indices)
    with torch.no_grad():
        acts = {}
        handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: acts.update(a=o))
        model(photos)
        handle.remove()
    proj = principal_projection(acts["a"])
    for i in range(len(photos)):
        candidates = [
            normalize01(upsample(torch.relu(s * proj[i : i + 1]), photos.shape[-2:]))[0].numpy()
            for s in (1.0, -1.0)
        ]
        errors = [np.abs(c - theirs[i]).max() for c in candidates]
        assert min(errors) <= TOLERANCE  # the reference is one of the two signs
        np.testing.assert_allclose(ours.upsampled[i], candidates[0], atol=1e-6)  # ours: the agreeing sign
