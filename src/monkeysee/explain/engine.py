"""One call explains a batch with any number of CAM methods.

All requested methods share one forward pass; the gradient methods also share one gradient pass,
taken with `torch.autograd.grad` with respect to the hooked activation only (so no weight gradients
are computed and none are left behind, and frozen models need no `requires_grad` changes).
The model is evaluated in eval mode and left exactly as found: modes, flags, `.grad`, hooks, weights.

With `precision="bf16"` the model's passes run under autocast (the weights stay float32); the
activations, gradients and logits are cast to float32 before any map is formed, so every method and
the normalisation do their arithmetic in float32 on the bf16 pass's values.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from monkeysee.errors import ConfigError
from monkeysee.explain.layers import Capture, ExplainError, LayerRef, evaluating, forward_hook, resolve_layer
from monkeysee.explain.methods import METHODS, LayerPass, Probe, channels_last, resolve_methods
from monkeysee.explain.result import CamResult
from monkeysee.explain.targets import TargetSpec, target_tensor
from monkeysee.runtime import autocast, resolve_precision

NORMALIZE_EPS = 1e-6


def normalize01(maps: torch.Tensor, eps: float = NORMALIZE_EPS) -> torch.Tensor:
    """Min-max scale each (…, h, w) map to [0, 1].

    The denominator is span + eps·max(|min|, |max|) (+ the smallest float): relative, so maps of any
    magnitude scale alike, and a constant or all-zero map becomes all zero instead of NaN.
    """
    flat = maps.flatten(-2)
    lo = flat.amin(-1)[..., None, None]
    hi = flat.amax(-1)[..., None, None]
    scale = (hi - lo) + eps * torch.maximum(hi.abs(), lo.abs()) + torch.finfo(maps.dtype).tiny
    return ((maps - lo) / scale).clamp_(0.0, 1.0)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) -> (B, H, W), bilinear with pixel centres aligned as in `F.interpolate`'s default."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def explain(
    model: nn.Module,
    x: torch.Tensor,
    layer: LayerRef | None = None,
    methods: str | Sequence[str] = ("gradcam",),
    targets: TargetSpec = None,
    *,
    class_names: Sequence[str] | None = None,
    images: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    chunk_size: int = 32,
    precision: str = "fp32",
) -> dict[str, CamResult]:
    """Class activation maps of a batch `x` (B, 3, H, W) for each method in `methods`.

    `layer` is a dotted module name or module (default: the model's last body stage); `targets` the
    class to explain: None for each photo's prediction, one index, or one per photo. `class_names`
    names the classes in the results, `images` (B, H, W, 3 uint8) are kept for overlays and `names`
    name the photos in saved files. `chunk_size` bounds how many perturbed copies Score-CAM and
    Ablation-CAM send through the model at once. `precision` is the model passes' arithmetic: "fp32"
    (exact, the default here), "bf16" (autocast) or "auto" (bf16 where the hardware has it; what
    `Explainer` and the CLI use). Returns {method name: CamResult}.
    """
    method_names = resolve_methods(list(methods) if not isinstance(methods, str) else methods)
    layer_name, module = resolve_layer(model, layer)
    need_grad = any(METHODS[m].uses_gradients for m in method_names)
    if need_grad and torch.is_inference_mode_enabled():
        grad_methods = ", ".join(m for m in method_names if METHODS[m].uses_gradients)
        raise ExplainError(
            f"{grad_methods} need gradients, and torch.inference_mode() switches autograd off for "
            "everything computed inside it",
            fix="call explain outside inference_mode (inside torch.no_grad() is fine), "
            "or use a gradient-free method: eigencam, scorecam or ablationcam",
        )
    x = _as_batch(x, model)
    precision = checked_precision(precision, x.device)
    if images is not None and (images.shape[:3] != (len(x), *x.shape[-2:]) or images.dtype != np.uint8):
        raise ExplainError(
            f"images must be uint8 (B, H, W, 3) matching the photos, got {images.dtype} "
            f"{images.shape} for photos {tuple(x.shape)}",
            fix="pass the photos as the model saw them",
        )
    if names is not None and len(names) != len(x):
        raise ExplainError(f"{len(names)} names for {len(x)} photos", fix="give one name per photo")
    results: dict[str, CamResult] = {}
    with evaluating(model):
        start = time.perf_counter()
        p = _layer_pass(model, x, layer_name, module, targets, need_grad, chunk_size, precision)
        shared = time.perf_counter() - start
        probs = torch.softmax(p.logits, dim=1).gather(1, p.targets[:, None])[:, 0]
        logits = p.logits.gather(1, p.targets[:, None])[:, 0]
        predicted = p.logits.argmax(dim=1)
        t_list = [int(t) for t in p.targets]
        labels = class_names or [f"class {i}" for i in range(p.logits.shape[1])]
        for name in method_names:
            start = time.perf_counter()
            raw = F.relu(METHODS[name]().map(p).detach().float())
            maps = normalize01(raw)
            big = normalize01(upsample(raw, tuple(x.shape[-2:])))
            results[name] = CamResult(
                method=name,
                layer=layer_name,
                maps=_frozen(maps),
                upsampled=_frozen(big),
                raw=_frozen(raw),
                target_indices=tuple(t_list),
                target_names=tuple(labels[t] for t in t_list),
                target_logits=tuple(float(v) for v in logits),
                target_probabilities=tuple(float(v) for v in probs),
                predicted_indices=tuple(int(v) for v in predicted),
                names=tuple(names) if names is not None else tuple(f"photo{i}" for i in range(len(x))),
                images=images,
                seconds=shared + time.perf_counter() - start,
                precision=precision,
            )
    return results


def checked_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """'auto', 'bf16' or 'fp32' resolved for `device` ('auto' is bf16 where the hardware has it)."""
    try:
        return resolve_precision(precision, device)
    except ValueError as exc:
        raise ConfigError(str(exc), fix="pass precision 'auto', 'bf16' or 'fp32'") from None


def _frozen(t: torch.Tensor) -> np.ndarray:
    """Read-only numpy data (a view of a tensor nothing else holds): results are values, not buffers."""
    a = t.cpu().numpy()
    a.setflags(write=False)
    return a


def _as_batch(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """A (B, C, H, W) float tensor on the model's device, never the caller's tensor itself."""
    if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4):
        raise ExplainError(
            "photos must be a (B, 3, H, W) or (3, H, W) tensor",
            fix="preprocess photos with monkeysee.data.transforms.eval_transform",
        )
    if x.dim() == 3:
        x = x[None]
    param = next(model.parameters(), None)
    device = param.device if param is not None else x.device
    x = x.detach().to(device=device, dtype=torch.float32)
    if x.is_inference() and not torch.is_inference_mode_enabled():
        x = x.clone()  # tensors made under inference_mode cannot enter an autograd graph
    return channels_last(x)


def _layer_pass(
    model: nn.Module,
    x: torch.Tensor,
    layer_name: str,
    module: nn.Module,
    targets: TargetSpec,
    need_grad: bool,
    chunk_size: int,
    precision: str = "fp32",
) -> LayerPass:
    """One forward pass with the layer hooked, and, if `need_grad`, d(target logit)/d(activation).

    Under bf16 the graph after the layer, and so the gradient, is in bf16 as autocast made it; what is
    returned (activations, gradients, logits) is float32.
    """
    capture = Capture(layer_name, track_grad=need_grad)
    # no_grad up to the layer; the hook switches grad on from there (no_grad's exit restores the mode).
    with forward_hook(module, capture), torch.no_grad(), autocast(precision, x.device):
        out = model(x)
    activation = capture.result()
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ExplainError(
            "the model must return (B, classes) logits",
            fix="explain a classifier, or wrap the model so it returns logits",
        )
    t = target_tensor(targets, out.detach().argmax(dim=1), out.shape[1])
    gradients = None
    if need_grad:
        if not out.requires_grad:
            raise ExplainError(
                f"the output does not depend on layer {layer_name!r}",
                fix="choose a layer on the path from the photo to the prediction",
            )
        with torch.enable_grad():  # the caller may be under no_grad; the graph exists already
            score = out.float().gather(1, t[:, None]).sum()
        (gradients,) = torch.autograd.grad(score, activation, allow_unused=True)
        if gradients is None:
            raise ExplainError(
                f"the output does not depend on layer {layer_name!r}",
                fix="choose a layer on the path from the photo to the prediction",
            )
        gradients = gradients.float()  # a no-op in fp32
    acts = activation.detach().float()
    if acts.dim() != 4:
        raise ExplainError(
            f"layer {layer_name!r} outputs shape {tuple(acts.shape)}, not (B, K, h, w)",
            fix="choose a convolutional layer or block",
        )
    probe = Probe(model, layer_name, module, x, chunk_size, precision)
    return LayerPass(acts, gradients, out.detach().float(), t, probe)
