"""Pictures from explanation arrays: pure functions from arrays to RGB arrays or matplotlib figures.

`overlay` is the hot path (web app, report): a 256-entry colour lookup table and one blend in numpy,
no matplotlib figure. Figures are built on `matplotlib.figure.Figure` directly, never through pyplot,
so nothing global is touched and they can be drawn from any thread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from monkeysee.errors import ConfigError

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn: predicting never needs it
    from matplotlib.figure import Figure

DEFAULT_CMAP = "inferno"


@lru_cache(maxsize=16)
def colormap_lut(name: str = DEFAULT_CMAP) -> np.ndarray:
    """(256, 3) uint8 RGB table of a matplotlib colormap (perceptual ones: inferno, viridis, turbo...)."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ConfigError(f"unknown colour map {name!r}",
                          fix="pass a matplotlib colour map: inferno, viridis, magma or turbo") from None
    lut = np.round(cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def resize_map(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float map to (height, width)."""
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape == tuple(size):
        return cam
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(cam))[None, None]
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[0, 0].numpy()


def heatmap(cam_01: np.ndarray, cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """A [0, 1] map coloured with `cmap`: (h, w) float -> (h, w, 3) uint8 RGB."""
    index = np.rint(np.clip(np.nan_to_num(np.asarray(cam_01, dtype=np.float32)), 0.0, 1.0) * 255)
    return colormap_lut(cmap)[index.astype(np.uint8)]


def overlay(
    image_rgb_uint8: np.ndarray, cam_01: np.ndarray, alpha: float = 0.5, cmap: str = DEFAULT_CMAP
) -> np.ndarray:
    """Blend a [0, 1] map (any size; resized bilinearly) over an RGB uint8 photo.

    `alpha` is the opacity of the coloured map: 0 shows the photo only, 1 the map only.
    """
    image = np.asarray(image_rgb_uint8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    colours = heatmap(resize_map(cam_01, image.shape[:2]), cmap)
    blended = (1.0 - alpha) * image + alpha * colours.astype(np.float32)
    return np.rint(blended).astype(np.uint8)


def to_uint8_image(image: np.ndarray) -> np.ndarray:
    """(3, H, W) or (H, W, 3) floats in [0, 1] -> (H, W, 3) uint8."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[2] != 3:
        image = image.transpose(1, 2, 0)
    if image.dtype == np.uint8:
        return image
    return np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def save_png(image_rgb_uint8: np.ndarray, path: str | Path) -> Path:
    """Write an RGB uint8 array as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image_rgb_uint8)).save(path)
    return path


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write a figure as PNG (RGB, white background)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, facecolor="white", bbox_inches="tight")
    return path


def side_by_side(image_rgb_uint8: np.ndarray, overlays: Mapping[str, np.ndarray], title: str = "") -> Figure:
    """The photo, then one overlay per method, each under its name, in one row."""
    panels = [("photo", image_rgb_uint8), *overlays.items()]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.6 * len(panels), 3.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, picture) in zip(axes, panels, strict=True):
        ax.imshow(picture)
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def evidence_grid(photo: np.ndarray, rows: Sequence[tuple[str, Sequence[tuple[np.ndarray, str]]]],
                  title: str = "") -> Figure:
    """The photo, then one row per species of its nearest training photos (thumbnail, caption), each row
    named on its left."""
    from matplotlib.figure import Figure

    cols = 1 + max((len(r[1]) for r in rows), default=0)
    fig = Figure(figsize=(1.8 * cols, 1.9 * max(1, len(rows))))
    axes = fig.subplots(max(1, len(rows)), cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0][0].imshow(photo)
    axes[0][0].set_title("photo", fontsize=9)
    for r, (name, pictures) in enumerate(rows):
        axes[r][1].text(-0.1, 0.5, name, transform=axes[r][1].transAxes, rotation=90, ha="right",
                        va="center", fontsize=9)
        for c, (picture, caption) in enumerate(pictures, start=1):
            axes[r][c].imshow(picture)
            axes[r][c].set_title(caption, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def most_active_channels(activation: np.ndarray, n: int) -> np.ndarray:
    """Indices of the `n` channels of a (C, h, w) activation with the highest mean, most active first."""
    means = np.asarray(activation, dtype=np.float64).reshape(len(activation), -1).mean(axis=1)
    return np.argsort(-means, kind="stable")[: max(0, n)]


def _scaled(channel: np.ndarray) -> np.ndarray:
    lo, hi = float(channel.min()), float(channel.max())
    return (channel - lo) / (hi - lo) if hi > lo else np.zeros_like(channel, dtype=np.float32)


def channel_grid(activation: np.ndarray, layer: str, n: int = 16, cmap: str = "viridis") -> Figure:
    """A grid of the `n` most active channel maps of one layer's (C, h, w) activation.

    Each map is scaled on its own (so weak channels stay visible) and titled with its channel index
    and mean; the figure is titled with the layer name and the activation's shape.
    """
    activation = np.asarray(activation, dtype=np.float32)
    channels = most_active_channels(activation, n)
    cols = max(1, math.ceil(math.sqrt(len(channels))))
    rows = max(1, math.ceil(len(channels) / cols))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.9 * cols, 2.0 * rows + 0.5))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, c in zip(axes, channels, strict=False):
        ax.imshow(_scaled(activation[c]), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"#{c}  mean {activation[c].mean():.2f}", fontsize=8)
    shape = "×".join(str(s) for s in activation.shape)
    fig.suptitle(
        f"{layer}  ({shape}): top {len(channels)} of {len(activation)} channels by mean", fontsize=10
    )
    return fig


def activation_overview(
    image_rgb_uint8: np.ndarray, activations: Mapping[str, np.ndarray], cmap: str = "viridis"
) -> Figure:
    """The photo, then each layer's mean activation over channels, titled with layer name and shape."""
    panels: Sequence[tuple[str, np.ndarray]] = list(activations.items())
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.6 * (len(panels) + 1), 3.0))
    axes = fig.subplots(1, len(panels) + 1, squeeze=False)[0]
    axes[0].imshow(image_rgb_uint8)
    axes[0].set_title("photo", fontsize=9)
    axes[0].axis("off")
    for ax, (name, act) in zip(axes[1:], panels, strict=True):
        act = np.asarray(act, dtype=np.float32)
        ax.imshow(_scaled(act.mean(axis=0)), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{name}\n{'×'.join(str(s) for s in act.shape)}", fontsize=9)
        ax.axis("off")
    fig.suptitle("mean activation of each block", fontsize=10)
    return fig
