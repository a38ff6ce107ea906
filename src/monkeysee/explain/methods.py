"""The CAM family. Each method is a small class that only says how it weighs the layer's channels
(or, for the few that need more, how it forms the map); the engine does the passes, ReLU,
normalisation and upsampling for all of them.

Gradient methods read `LayerPass.gradients`, which the engine computes once per batch for all of them.
Perturbation methods (Score-CAM, Ablation-CAM) re-run the model through a `Probe`, in chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from monkeysee.errors import ConfigError
from monkeysee.models.hooks import Capture, forward_hook
from monkeysee.registry import Registry
from monkeysee.runtime import autocast


class Probe:
    """Re-runs the model on perturbed photos or perturbed layer activations, `chunk_size` at a time.

    When the model is a monkeysee Classifier and the layer is a body stage, activations are fed straight
    into the stages after it (the 'tail'), so ablating a channel costs only the rest of the network.
    Passes run under `inference_mode` (no autograd bookkeeping at all) and, with `precision` "bf16",
    under autocast; scores come back as float32.
    """

    def __init__(
        self,
        model: nn.Module,
        layer_name: str,
        layer: nn.Module,
        inputs: torch.Tensor,
        chunk_size: int = 32,
        precision: str = "fp32",
    ) -> None:
        if chunk_size < 1:
            raise ConfigError(f"chunk size must be at least 1, not {chunk_size}", fix="pass --chunk-size 32")
        self.model = model
        self.layer_name = layer_name
        self.layer = layer
        self.inputs = inputs
        self.chunk_size = chunk_size
        self.precision = precision
        self.tail = _tail(model, layer)

    @contextmanager
    def _passes(self) -> Iterator[None]:
        with torch.inference_mode(), autocast(self.precision, self.inputs.device):
            yield

    def score_inputs(self, xs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Target logits of the model on photos `xs` (one chunk)."""
        with self._passes():
            return self.model(channels_last(xs)).float().gather(1, targets[:, None])[:, 0]

    def blank_scores(self, targets: torch.Tensor) -> torch.Tensor:
        """Target logits of the all-zero input (a photo masked by an all-zero map), one pass for all."""
        with self._passes():
            logits = self.model(torch.zeros_like(self.inputs[:1])).float()
        return logits[0, targets]

    def score_activations(self, index: int, acts: torch.Tensor, target: int) -> torch.Tensor:
        """Target logits when the layer outputs `acts` (n copies, edited) for photo `index` (one chunk)."""
        with self._passes():
            if self.tail is not None:
                logits = self.tail(acts)
            else:
                x = self.inputs[index : index + 1].expand(len(acts), *self.inputs.shape[1:])
                with forward_hook(self.layer, Capture(self.layer_name, replace=acts)):
                    logits = self.model(x)
            return logits.float()[:, target]


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """4-D inputs in channels-last layout: oneDNN's fast convolution path on CPU (the model is untouched)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _tail(model: nn.Module, layer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The part of a Classifier after body stage `layer`, or None when the model is anything else."""
    from monkeysee.models import Classifier

    if not isinstance(model, Classifier) or type(model).forward is not Classifier.forward:
        return None
    if type(model.body) is not nn.Sequential:
        return None
    if layer is model.body:
        return model.head
    stages = list(model.body.children())
    for i, stage in enumerate(stages):
        if stage is layer:
            rest = nn.Sequential(*stages[i + 1 :])  # shares the modules; the model is not modified
            return lambda a: model.head(rest(a))
    return None


@dataclass(frozen=True, eq=False)
class LayerPass:
    """What one forward (and, if needed, one gradient) pass saw at the explained layer.

    `activations` and `gradients` are (B, K, h, w); `gradients` is d(target logit)/d(activations) and
    None when no requested method needs it. `targets` holds one class index per photo.
    """

    activations: torch.Tensor
    gradients: torch.Tensor | None
    logits: torch.Tensor
    targets: torch.Tensor
    probe: Probe


class CamMethod:
    """A class activation map method: how much each channel of the layer counts for the target.

    Subclasses set `name`, say whether they need gradients, and implement `weights` (B, K); the map is
    then the weighted sum of channels. Methods whose map is not a channel-weighted sum override `map`.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    uses_gradients: ClassVar[bool] = True

    def weights(self, p: LayerPass) -> torch.Tensor:
        raise NotImplementedError

    def map(self, p: LayerPass) -> torch.Tensor:
        """The raw (B, h, w) map, before ReLU and normalisation."""
        return torch.einsum("bk,bkhw->bhw", self.weights(p), p.activations)


METHODS: Registry[type[CamMethod]] = Registry("CAM method")
DEFAULT_METHOD = "gradcam"
"""The method shown wherever one heatmap is drawn without asking (web page, batch heatmaps, report)."""


def register_method(cls: type[CamMethod]) -> type[CamMethod]:
    """Class decorator: make `cls` available by its `name`."""
    return METHODS.add(cls.name, cls)


def method_names() -> list[str]:
    """Registered method names, in registration order (gradient methods first)."""
    return list(METHODS)


def resolve_methods(names: str | list[str] | tuple[str, ...]) -> list[str]:
    """Validate method names; 'all' expands to every method; comma-separated strings are split."""
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for item in names:
        for name in (n.strip().lower() for n in item.split(",") if n.strip()):
            expanded = method_names() if name == "all" else [name]
            for n in expanded:
                if n not in METHODS:
                    raise ConfigError(
                        f"unknown CAM method {n!r}", fix=f"choose from: {', '.join(method_names())}, or all"
                    )
                if n not in out:
                    out.append(n)
    if not out:
        raise ConfigError("no CAM method given", fix=f"choose from: {', '.join(method_names())}, or all")
    return out


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, and 0 where den is 0 (a channel with nothing in it carries no weight)."""
    nonzero = den != 0
    return torch.where(nonzero, num / torch.where(nonzero, den, torch.ones_like(den)), torch.zeros_like(num))


@register_method
class GradCAM(CamMethod):
    """Selvaraju et al. 2017: a channel weighs the spatial mean of its gradient."""

    name = "gradcam"
    title = "Grad-CAM"

    def weights(self, p: LayerPass) -> torch.Tensor:
        return p.gradients.mean(dim=(2, 3))


@register_method
class GradCAMPlusPlus(CamMethod):
    """Chattopadhay et al. 2018: positive gradients, each weighted by alpha = g² / (2g² + ΣA·g³).

    With the exponential-score trick of the paper the higher derivatives are powers of g. No epsilon is
    added to the denominator (it would swamp small gradients); alpha is 0 where the denominator is 0.
    """

    name = "gradcam++"
    title = "Grad-CAM++"

    def weights(self, p: LayerPass) -> torch.Tensor:
        g = p.gradients
        g2 = g * g
        total = p.activations.sum(dim=(2, 3), keepdim=True)
        alpha = _safe_div(g2, 2 * g2 + total * g2 * g)
        return (alpha * F.relu(g)).sum(dim=(2, 3))


@register_method
class XGradCAM(CamMethod):
    """Fu et al. 2020: gradients averaged with the channel's own activations as weights."""

    name = "xgradcam"
    title = "XGrad-CAM"

    def weights(self, p: LayerPass) -> torch.Tensor:
        a = p.activations
        return _safe_div((p.gradients * a).sum(dim=(2, 3)), a.sum(dim=(2, 3)))


@register_method
class HiResCAM(CamMethod):
    """Draelos & Carin 2020: gradient times activation, element-wise, summed over channels."""

    name = "hirescam"
    title = "HiResCAM"

    def map(self, p: LayerPass) -> torch.Tensor:
        return (p.gradients * p.activations).sum(dim=1)


@register_method
class LayerCAM(CamMethod):
    """Jiang et al. 2021: positive gradient times activation, element-wise, summed over channels."""

    name = "layercam"
    title = "LayerCAM"

    def map(self, p: LayerPass) -> torch.Tensor:
        return (F.relu(p.gradients) * p.activations).sum(dim=1)


@register_method
class EigenCAM(CamMethod):
    """Muhammad & Yeasin 2020: projection of the (centred) activations on their first principal component.

    Class-agnostic and gradient-free. An SVD fixes the component only up to sign; we pick the sign that
    correlates positively with the channel-mean activation, so bright means 'where the layer fires'.
    """

    name = "eigencam"
    title = "Eigen-CAM"
    uses_gradients = False

    def map(self, p: LayerPass) -> torch.Tensor:
        return principal_projection(p.activations)


def principal_projection(activations: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) -> (B, h, w): each photo's positions projected on its first principal component."""
    b, k, h, w = activations.shape
    x = activations.reshape(b, k, h * w).transpose(1, 2).double()  # (B, positions, channels)
    x = x - x.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    proj = (x @ vh[:, 0, :, None])[..., 0]  # (B, positions)
    mean_map = activations.reshape(b, k, h * w).double().mean(dim=1)
    agree = ((proj - proj.mean(1, keepdim=True)) * (mean_map - mean_map.mean(1, keepdim=True))).sum(1)
    sign = torch.where(agree < 0, -1.0, 1.0).to(proj)
    return (proj * sign[:, None]).reshape(b, h, w).to(activations.dtype)


@register_method
class ScoreCAM(CamMethod):
    """Wang et al. 2020: a channel weighs the target logit of the photo masked by that channel's map.

    Each map is upsampled (bilinear) to the photo, min-max scaled to [0, 1] and multiplied into the
    photo; the channel weights are the softmax over channels of the resulting target logits (the paper's
    Algorithm 1). Masked photos go through the model `chunk_size` at a time, so memory stays bounded.
    Channels whose map is constant all give the same all-zero mask: that photo is scored once.
    """

    name = "scorecam"
    title = "Score-CAM"
    uses_gradients = False

    def weights(self, p: LayerPass) -> torch.Tensor:
        acts, probe = p.activations, p.probe
        b, k = acts.shape[:2]
        size = probe.inputs.shape[-2:]
        lo, hi = acts.amin(dim=(2, 3)), acts.amax(dim=(2, 3))
        live = hi > lo
        scores = torch.empty(b, k, dtype=torch.float32, device=acts.device)
        if not live.all():
            scores[:] = probe.blank_scores(p.targets)[:, None]
        pairs = live.nonzero()
        with tqdm(total=len(pairs), desc="Score-CAM", unit="mask", disable=None, leave=False) as bar:
            for chunk in pairs.split(probe.chunk_size):
                i, c = chunk[:, 0], chunk[:, 1]
                masks = F.interpolate(acts[i, c][:, None], size=size, mode="bilinear", align_corners=False)
                m_lo = masks.amin(dim=(2, 3), keepdim=True)
                span = masks.amax(dim=(2, 3), keepdim=True).sub_(m_lo)
                masks.sub_(m_lo).div_(span.masked_fill_(span == 0, 1.0))  # a flat mask is all 0
                scores[i, c] = probe.score_inputs(probe.inputs[i] * masks, p.targets[i])
                bar.update(len(chunk))
        return torch.softmax(scores, dim=1).to(acts.dtype)


@register_method
class AblationCAM(CamMethod):
    """Desai & Ramaswamy 2020: a channel weighs the relative drop of the target logit when it is zeroed.

    weight_k = (y - y_k) / y. A channel that is already all zero cannot change anything and gets 0
    without a pass. Ablated copies of the layer go through the rest of the model `chunk_size` at a time.
    """

    name = "ablationcam"
    title = "Ablation-CAM"
    uses_gradients = False

    def weights(self, p: LayerPass) -> torch.Tensor:
        acts, probe = p.activations, p.probe
        b, k = acts.shape[:2]
        base = p.logits.float().gather(1, p.targets[:, None])[:, 0]
        ablated = base[:, None].repeat(1, k)
        active = acts.flatten(2).ne(0).any(dim=2)
        with tqdm(
            total=int(active.sum()), desc="Ablation-CAM", unit="channel", disable=None, leave=False
        ) as bar:
            for n in range(b):
                channels = active[n].nonzero()[:, 0]
                for chunk in channels.split(probe.chunk_size):
                    copies = acts[n].expand(len(chunk), -1, -1, -1).clone()
                    copies[torch.arange(len(chunk), device=chunk.device), chunk] = 0
                    ablated[n, chunk] = probe.score_activations(n, copies, int(p.targets[n]))
                    bar.update(len(chunk))
        y = base[:, None]
        safe_y = torch.where(y == 0, torch.full_like(y, torch.finfo(y.dtype).eps), y)
        return ((y - ablated) / safe_y).to(acts.dtype)
