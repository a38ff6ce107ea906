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

from monkeysee.errors import ExplainError
from monkeysee.explain.methods import (
    DEFAULT_METHOD,
    METHODS,
    LayerPass,
    Probe,
    channels_last,
    resolve_methods,
)
from monkeysee.explain.result import CamResult
from monkeysee.models.forward import ForwardPass, TargetSpec, forward_pass
from monkeysee.models.hooks import LayerRef, evaluating, resolve_layer
from monkeysee.runtime import checked_precision

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
    methods: str | Sequence[str] = (DEFAULT_METHOD,),
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
    return explain_pass(model, x, layer, methods, targets, class_names=class_names, images=images,
                        names=names, chunk_size=chunk_size, precision=precision)[1]


def explain_pass(
    model: nn.Module,
    x: torch.Tensor,
    layer: LayerRef | None = None,
    methods: str | Sequence[str] = (DEFAULT_METHOD,),
    targets: TargetSpec = None,
    *,
    class_names: Sequence[str] | None = None,
    images: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    chunk_size: int = 32,
    precision: str = "fp32",
) -> tuple[ForwardPass, dict[str, CamResult]]:
    """`explain`, also returning the pass the maps came from (logits, pooled features): one forward
    pass gives the answer and its explanation."""
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
    _check_extras(x, images, names)
    with evaluating(model):
        start = time.perf_counter()
        p = forward_pass(model, x, layer=(layer_name, module), targets=targets, gradients=need_grad,
                         precision=precision)
        shared = time.perf_counter() - start
        results = cams_from_pass(model, x, p, method_names, class_names=class_names, images=images,
                                 names=names, chunk_size=chunk_size, precision=precision,
                                 seconds=shared)
    return p, results


def cams_from_pass(
    model: nn.Module,
    x: torch.Tensor,
    p: ForwardPass,
    methods: Sequence[str] = (DEFAULT_METHOD,),
    *,
    class_names: Sequence[str] | None = None,
    images: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    chunk_size: int = 32,
    precision: str = "fp32",
    seconds: float = 0.0,
) -> dict[str, CamResult]:
    """Maps for each method from a pass of `model` on `x` that hooked the layer (`forward_pass` with
    `layer`, and `gradients` when a gradient method is asked for). `seconds` is the pass's own time,
    added to each result's."""
    if p.layer is None or p.activation is None:
        raise ExplainError("the pass hooked no layer", fix="run forward_pass with layer=(name, module)")
    method_names = resolve_methods(list(methods))
    missing = [m for m in method_names if METHODS[m].uses_gradients and p.gradients is None]
    if missing:
        raise ExplainError(f"{', '.join(missing)} need the pass's gradients",
                           fix="run forward_pass with gradients=True")
    _check_extras(x, images, names)
    module = resolve_layer(model, p.layer)[1]
    lp = LayerPass(p.activation, p.gradients, p.logits, p.targets,
                   Probe(model, p.layer, module, x, chunk_size, precision))
    probs = torch.softmax(p.logits, dim=1).gather(1, p.targets[:, None])[:, 0]
    logits = p.logits.gather(1, p.targets[:, None])[:, 0]
    predicted = p.logits.argmax(dim=1)
    t_list = [int(t) for t in p.targets]
    labels = class_names or [f"class {i}" for i in range(p.logits.shape[1])]
    results: dict[str, CamResult] = {}
    with evaluating(model):
        for name in method_names:
            start = time.perf_counter()
            raw = F.relu(METHODS[name]().map(lp).detach().float())
            maps = normalize01(raw)
            big = normalize01(upsample(raw, tuple(x.shape[-2:])))
            results[name] = CamResult(
                method=name,
                layer=p.layer,
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
                seconds=seconds + time.perf_counter() - start,
                precision=precision,
            )
    return results


def _check_extras(x: torch.Tensor, images: np.ndarray | None, names: Sequence[str] | None) -> None:
    if images is not None and (images.shape[:3] != (len(x), *x.shape[-2:]) or images.dtype != np.uint8):
        raise ExplainError(
            f"images must be uint8 (B, H, W, 3) matching the photos, got {images.dtype} "
            f"{images.shape} for photos {tuple(x.shape)}",
            fix="pass the photos as the model saw them",
        )
    if names is not None and len(names) != len(x):
        raise ExplainError(f"{len(names)} names for {len(x)} photos", fix="give one name per photo")


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
