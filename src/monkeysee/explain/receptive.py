"""The exact receptive field of a layer: which input pixels each position of its feature map can see.

Computed from the convolutions, poolings and paddings the model actually runs, traced on one blank
input: every 4-D tensor gets a geometry per spatial axis (`Axis`: first pixel seen by position 0, the
step between positions, the span each sees), and each operation maps its inputs' geometry to its
output's. Residual additions take the union of their branches; a branch pooled to 1x1 (squeeze-and-
excitation gates) has no positions and is left out, as in the usual receptive-field arithmetic. So
padding applied on the fly (timm's "same" convolutions pad right/bottom only on even inputs) counts
exactly as it runs, and no per-architecture table is needed.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from monkeysee.errors import ExplainError
from monkeysee.models.hooks import evaluating, forward_hook, resolve_layer


@dataclass(frozen=True)
class Axis:
    """Position i of the feature map sees input pixels start + i·jump … start + i·jump + size − 1."""

    start: int
    jump: int
    size: int

    def through(self, kernel: int, stride: int, pad_before: int, dilation: int = 1) -> Axis:
        """The geometry after a window of `kernel` taps (`dilation` apart) moved by `stride`."""
        return Axis(self.start - pad_before * self.jump, self.jump * stride,
                    self.size + (kernel - 1) * dilation * self.jump)

    def union(self, other: Axis) -> Axis:
        if other.jump != self.jump:
            raise ExplainError("two branches of different strides are added",
                               fix="choose a layer whose inputs share one stride")
        start = min(self.start, other.start)
        return Axis(start, self.jump, max(self.start + self.size, other.start + other.size) - start)


Geometry = tuple[Axis, Axis]  # (rows, columns)


@dataclass(frozen=True)
class ReceptiveField:
    """Where each position of `layer`'s (h, w) map looks in the (height, width) input."""

    layer: str
    rows: Axis
    cols: Axis
    input_size: tuple[int, int]
    output_size: tuple[int, int]

    def box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), bottom/right exclusive, of position (i, j), clipped to the input."""
        top, left = self.rows.start + i * self.rows.jump, self.cols.start + j * self.cols.jump
        height, width = self.input_size
        return (max(top, 0), max(left, 0), min(top + self.rows.size, height),
                min(left + self.cols.size, width))

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "size": [self.rows.size, self.cols.size],
                "jump": [self.rows.jump, self.cols.jump], "start": [self.rows.start, self.cols.start],
                "input_size": list(self.input_size), "output_size": list(self.output_size)}


def _pair(v: Any) -> tuple[int, int]:  # noqa: ANN401 - an int or a pair, as torch accepts
    if isinstance(v, int):
        return v, v
    t = tuple(int(a) for a in v)
    return (t[0], t[0]) if len(t) == 1 else (t[0], t[1])


def _arg(args: Sequence[Any], kwargs: dict[str, Any], i: int, name: str, default: Any) -> Any:  # noqa: ANN401
    return args[i] if len(args) > i else kwargs.get(name, default)


def _conv(geo: Geometry, x: torch.Tensor, args: Sequence[Any], kw: dict[str, Any]) -> Geometry:
    kernel = args[1].shape[-2:]
    stride = _pair(_arg(args, kw, 3, "stride", 1))
    dilation = _pair(_arg(args, kw, 5, "dilation", 1))
    padding = _arg(args, kw, 4, "padding", 0)
    if padding == "valid":
        padding = 0
    if padding == "same":  # torch pads (k−1)·d in total, the smaller half before
        padding = tuple(((k - 1) * d) // 2 for k, d in zip(kernel, dilation, strict=True))
    pad = _pair(padding)
    return (geo[0].through(kernel[0], stride[0], pad[0], dilation[0]),
            geo[1].through(kernel[1], stride[1], pad[1], dilation[1]))


def _pool(geo: Geometry, x: torch.Tensor, args: Sequence[Any], kw: dict[str, Any]) -> Geometry:
    kernel = _pair(_arg(args, kw, 1, "kernel_size", 1))
    stride = _arg(args, kw, 2, "stride", None)
    stride = kernel if stride in (None, (), []) else _pair(stride)
    pad = _pair(_arg(args, kw, 3, "padding", 0))
    dilation = _pair(kw.get("dilation", 1))
    return (geo[0].through(kernel[0], stride[0], pad[0], dilation[0]),
            geo[1].through(kernel[1], stride[1], pad[1], dilation[1]))


def _pad(geo: Geometry, x: torch.Tensor, args: Sequence[Any], kw: dict[str, Any]) -> Geometry:
    pad = [*_arg(args, kw, 1, "pad", ()), 0, 0, 0, 0]
    return geo[0].through(1, 1, pad[2]), geo[1].through(1, 1, pad[0])


Rule = Callable[[Geometry, torch.Tensor, Sequence[Any], dict[str, Any]], Geometry]
RULES: dict[str, Rule] = {
    "conv2d": _conv, "max_pool2d": _pool, "avg_pool2d": _pool, "max_pool2d_with_indices": _pool,
    "pad": _pad,
}
"""Operations that move or widen the window, by function name; any other operation that keeps the
spatial size passes its inputs' geometry on."""


class _Tracer(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.geometry: dict[int, tuple[weakref.ref[torch.Tensor], Geometry]] = {}

    def get(self, t: object) -> Geometry | None:
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            return None
        entry = self.geometry.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def put(self, t: torch.Tensor, geo: Geometry) -> None:
        self.geometry[id(t)] = (weakref.ref(t), geo)

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (),  # noqa: ANN401
                           kwargs: dict[str, Any] | None = None) -> Any:  # noqa: ANN401
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flat = [a for a in args for a in (a if isinstance(a, list | tuple) else [a])]
        inputs = [(a, g) for a in flat if (g := self.get(a)) is not None]
        outs = out if isinstance(out, tuple) else (out,)
        if not inputs or not isinstance(outs[0], torch.Tensor) or outs[0].dim() != 4:
            return out
        name = getattr(func, "__name__", "")
        if name in RULES:
            geo = RULES[name](inputs[0][1], inputs[0][0], args, kwargs)
        else:
            size = outs[0].shape[-2:]
            same = [g for a, g in inputs if a.shape[-2:] == size]
            if not same:
                return out  # resampled by an operation without a rule: no geometry from here on
            geo = same[0]
            for g in same[1:]:
                geo = (geo[0].union(g[0]), geo[1].union(g[1]))
        self.put(outs[0], geo)
        return out


def receptive_fields(model: nn.Module, layers: Sequence[str], input_size: tuple[int, int]
                     ) -> dict[str, ReceptiveField]:
    """{layer: ReceptiveField} for `layers` of `model` on inputs of `input_size` (height, width),
    traced with one blank photo in eval mode; the model is left as it was."""
    resolved = [resolve_layer(model, name) for name in layers]
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:  # noqa: ANN401
            seen[name] = output

        return hook

    param = next(model.parameters(), None)
    x = torch.zeros(1, 3, *input_size, device=param.device if param is not None else "cpu")
    tracer = _Tracer()
    tracer.put(x, (Axis(0, 1, 1), Axis(0, 1, 1)))
    with ExitStack() as stack, evaluating(model), torch.no_grad():
        for name, module in resolved:
            stack.enter_context(forward_hook(module, keep(name)))
        with tracer:
            model(x)
    fields = {}
    for name, _ in resolved:
        geo = tracer.get(seen.get(name))
        if geo is None:
            raise ExplainError(f"layer {name!r} has no receptive field that can be traced (it is not a "
                               "(B, C, h, w) map, or it is resampled by an operation without a rule)",
                               fix="choose a convolutional block, e.g. one of the body stages")
        out = seen[name]
        fields[name] = ReceptiveField(name, geo[0], geo[1], input_size, (out.shape[-2], out.shape[-1]))
    return fields
