"""The channel atlas: for every channel of a layer, the k photo regions where it fires most.

One pass over the photos with forward hooks on the chosen layers; each hook folds its batch into a
running top-k per channel (a photo's strongest position per channel, the k strongest photos kept), so
memory is channels × k whatever the number of photos, and only photo indices and positions are kept.
The regions are cut afterwards (`monkeysee.explain.atlas_render`) from the receptive field of the
winning position (`monkeysee.explain.receptive`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from monkeysee.data.preprocess import Preprocess
from monkeysee.errors import ConfigError, DataError
from monkeysee.explain.activations import stage_layers
from monkeysee.explain.batches import PhotoBatches
from monkeysee.explain.receptive import ReceptiveField, receptive_fields
from monkeysee.models.forward import forward_pass
from monkeysee.models.hooks import forward_hook, resolve_layer
from monkeysee.runtime import checked_precision


@dataclass
class RunningTopK:
    """The k largest values seen per channel, with the photo and (row, col) each came from.

    Ties keep the earlier photo (a stable sort with the kept entries first), and within a photo the
    first position in row-major order (`max`'s rule), so the atlas does not depend on batch size.
    Slots not yet filled hold photo −1 and value −inf.
    """

    values: torch.Tensor  # (C, k) float32, descending
    photos: torch.Tensor  # (C, k) int64
    rows: torch.Tensor
    cols: torch.Tensor

    @classmethod
    def empty(cls, channels: int, k: int) -> RunningTopK:
        def full(v: int) -> torch.Tensor:
            return torch.full((channels, k), v, dtype=torch.int64)

        return cls(torch.full((channels, k), -torch.inf), full(-1), full(-1), full(-1))

    @property
    def k(self) -> int:
        return int(self.values.shape[1])

    def update(self, activation: torch.Tensor, first_photo: int) -> None:
        """Fold in a batch (B, C, h, w) of photos numbered first_photo, first_photo + 1, …"""
        b, c, _, w = activation.shape
        peak, where = activation.detach().float().flatten(2).max(dim=2)  # (B, C)
        numbers = torch.arange(first_photo, first_photo + b).expand(c, b)
        values = torch.cat([self.values, peak.T.cpu()], dim=1)
        order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, : self.k]
        where = where.T.cpu()
        self.values = values.gather(1, order)
        self.photos = torch.cat([self.photos, numbers], dim=1).gather(1, order)
        self.rows = torch.cat([self.rows, where // w], dim=1).gather(1, order)
        self.cols = torch.cat([self.cols, where % w], dim=1).gather(1, order)


@dataclass(frozen=True)
class Patch:
    """One of a channel's top regions: photo number, feature-map position, value, crop box in the
    model's input crop (top, left, bottom, right; bottom/right exclusive)."""

    photo: int
    row: int
    col: int
    value: float
    box: tuple[int, int, int, int]


@dataclass
class LayerAtlas:
    layer: str
    field: ReceptiveField
    top: RunningTopK

    @property
    def channels(self) -> int:
        return int(self.top.values.shape[0])

    def patches(self, channel: int) -> list[Patch]:
        """The channel's top regions, strongest first (fewer than k when there were fewer photos)."""
        t = self.top
        return [Patch(int(t.photos[channel, r]), int(t.rows[channel, r]), int(t.cols[channel, r]),
                      float(t.values[channel, r]),
                      self.field.box(int(t.rows[channel, r]), int(t.cols[channel, r])))
                for r in range(t.k) if int(t.photos[channel, r]) >= 0]


@dataclass
class ChannelAtlas:
    """The atlas of some layers over `photos` (the readable ones; patches number into this list)."""

    layers: dict[str, LayerAtlas]
    photos: list[str]
    preprocess: Preprocess
    seconds: float = 0.0
    unreadable: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self, channels: int | None = None) -> dict[str, Any]:
        """JSON-ready: every layer's receptive field and each channel's top patches."""
        return {
            "photos": self.photos,
            "seconds": round(self.seconds, 3),
            "unreadable": self.unreadable,
            "layers": [
                {"layer": name, "channels": la.channels, "receptive_field": la.field.to_dict(),
                 "top": [[{"photo": p.photo, "row": p.row, "col": p.col, "value": round(p.value, 6),
                           "box": list(p.box)} for p in la.patches(c)] for c in range(la.channels)]}
                for name, la in self.layers.items()
            ],
        }


class _Fold:
    """A forward hook folding a layer's output into its running top-k; `first` numbers the batch's
    first photo (set by the loop before each pass)."""

    def __init__(self, name: str, k: int) -> None:
        self.name, self.k = name, k
        self.first = 0
        self.top: RunningTopK | None = None

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:  # noqa: ANN401
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise ConfigError(f"layer {self.name!r} does not output (B, C, h, w) feature maps",
                              fix="choose a convolutional block, e.g. one of the body stages")
        if self.top is None:
            self.top = RunningTopK.empty(output.shape[1], self.k)
        self.top.update(output, self.first)


def channel_atlas(
    model: nn.Module,
    preprocess: Preprocess,
    photos: Sequence[str | Path],
    layers: Sequence[str] | None = None,
    top: int = 9,
    batch_size: int = 32,
    precision: str = "fp32",
    workers: int = 2,
) -> ChannelAtlas:
    """The top-`top` regions of every channel of `layers` (default: every body stage) over `photos`,
    in one pass; unreadable photos are listed and left out. The model is left as it was found."""
    if top < 1:
        raise ConfigError(f"top must be at least 1, not {top}", fix="ask for e.g. the top 9 patches")
    names = [resolve_layer(model, n)[0] for n in (layers or stage_layers(model))]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    precision = checked_precision(precision, device)
    fields = receptive_fields(model, names, (preprocess.input_size, preprocess.input_size))
    folds = {name: _Fold(name, top) for name in names}
    kept: list[str] = []
    batches = PhotoBatches(photos, preprocess, batch_size, workers, device)
    start = time.perf_counter()
    with ExitStack() as stack, tqdm(total=len(photos), desc="atlas", unit="photo", disable=None,
                                    leave=False) as bar:
        for name, fold in folds.items():
            stack.enter_context(forward_hook(resolve_layer(model, name)[1], fold))
        for indices, x in batches:
            for fold in folds.values():
                fold.first = len(kept)
            kept += [str(photos[i]) for i in indices]
            forward_pass(model, x, precision=precision)
            bar.n = indices[-1] + 1
            bar.refresh()
    unreadable = batches.unreadable
    if not kept:
        first = unreadable[0] if unreadable else {"path": "", "error": "no photos given"}
        raise DataError(f"none of the {len(photos)} photos could be read (first: {first['error']})",
                        fix="check the photo paths or the data folder", path=first["path"] or None)
    layer_atlas = {}
    for name, fold in folds.items():
        if fold.top is None:
            raise ConfigError(f"layer {name!r} did not run during the forward pass",
                              fix="choose a layer on the path from the photo to the prediction")
        layer_atlas[name] = LayerAtlas(name, fields[name], fold.top)
    return ChannelAtlas(layer_atlas, kept, preprocess, time.perf_counter() - start, unreadable)
