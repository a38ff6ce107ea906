"""Pictures of a channel atlas: the patches cut from the photos, a contact sheet per layer (one row per
channel, strongest patch first), a JSON index and an HTML page that shows them.

Each photo holding a shown patch is decoded once more (in threads), through the same eval transform the
pass used, and every patch it holds is cut from that crop. A receptive field larger than the photo is clipped
to the photo; where the field is more than twice the layer's stride (of 4 px or more), the winning
position's own cell (stride × stride around the field's centre) is outlined, so deep layers still say
where they fired.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

from monkeysee.data.transforms import denormalize
from monkeysee.explain.atlas import ChannelAtlas, LayerAtlas, Patch
from monkeysee.explain.batches import PhotoBatches
from monkeysee.explain.result import file_safe
from monkeysee.io import atomic_write_bytes, atomic_write_json

INDEX = "atlas.json"
PAGE = "index.html"
GAP = 2
LABEL = 44
OUTLINE = (255, 230, 0)


def shown_channels(layer: LayerAtlas, channels: int | None) -> list[int]:
    """The channels drawn: the first `channels` (all for None or 0)."""
    return list(range(layer.channels if not channels else min(channels, layer.channels)))


def cut_patches(atlas: ChannelAtlas, channels: int | None = 32, size: int = 64, workers: int = 2
                ) -> dict[str, dict[int, list[np.ndarray]]]:
    """{layer: {channel: [RGB uint8 (size, size, 3) patch, strongest first]}} for the shown channels."""
    wanted: dict[int, list[tuple[str, int, int, Patch]]] = defaultdict(list)
    out: dict[str, dict[int, list[np.ndarray]]] = {}
    for name, layer in atlas.layers.items():
        out[name] = {}
        for c in shown_channels(layer, channels):
            patches = layer.patches(c)
            out[name][c] = [np.zeros((size, size, 3), np.uint8)] * len(patches)
            for rank, p in enumerate(patches):
                wanted[p.photo].append((name, c, rank, p))
    order = sorted(wanted)
    batches = PhotoBatches([atlas.photos[i] for i in order], atlas.preprocess, workers=workers)
    for indices, x in batches:
        seen = denormalize(x, atlas.preprocess).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i, image in zip(indices, seen, strict=True):
            for name, c, rank, p in wanted[order[i]]:
                out[name][c][rank] = patch_image(image, p, atlas.layers[name], size)
    return out


def patch_image(seen: np.ndarray, patch: Patch, layer: LayerAtlas, size: int) -> np.ndarray:
    """The receptive-field crop of `patch` from the model's input crop `seen`, fitted into size × size
    (aspect kept, grey margins), with the winning cell outlined where the field is much wider."""
    top, left, bottom, right = patch.box
    crop = Image.fromarray(np.ascontiguousarray(seen[top:bottom, left:right]))
    f = layer.field
    if f.rows.jump >= 4 and f.rows.size > 2 * f.rows.jump:
        cy = f.rows.start + patch.row * f.rows.jump + f.rows.size // 2 - top
        cx = f.cols.start + patch.col * f.cols.jump + f.cols.size // 2 - left
        half_y, half_x = f.rows.jump // 2, f.cols.jump // 2
        width = max(1, round(max(crop.size) / size))
        ImageDraw.Draw(crop).rectangle((cx - half_x, cy - half_y, cx + half_x, cy + half_y),
                                       outline=OUTLINE, width=width)
    small = max(crop.size) < size
    method = Image.Resampling.NEAREST if small else Image.Resampling.BILINEAR
    return np.asarray(ImageOps.pad(crop, (size, size), method=method, color=(128, 128, 128)))


def contact_sheet(rows: dict[int, list[np.ndarray]], k: int, size: int) -> np.ndarray:
    """One row per channel (labelled with its number), its patches left to right, as RGB uint8."""
    height = max(1, len(rows)) * (size + GAP) + GAP
    sheet = Image.new("RGB", (LABEL + k * (size + GAP) + GAP, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (channel, patches) in enumerate(rows.items()):
        y = GAP + i * (size + GAP)
        draw.text((4, y + size // 2 - 6), str(channel), fill=(0, 0, 0))
        for j, patch in enumerate(patches):
            sheet.paste(Image.fromarray(patch), (LABEL + GAP + j * (size + GAP), y))
    return np.asarray(sheet)


def sheet_name(layer: str) -> str:
    return f"{file_safe(layer)}.png"


def write_atlas(atlas: ChannelAtlas, out: Path, channels: int | None = 32, size: int = 64,
                title: str = "Channel atlas") -> Path:
    """Write a contact sheet per layer, `atlas.json` (every channel's top patches) and `index.html`
    into `out`; returns the page."""
    out.mkdir(parents=True, exist_ok=True)
    patches = cut_patches(atlas, channels, size)
    for name, layer in atlas.layers.items():
        buf = _png(contact_sheet(patches[name], layer.top.k, size))
        atomic_write_bytes(out / sheet_name(name), buf)
    index = atlas.to_dict() | {"shown_channels": {n: shown_channels(la, channels)
                                                  for n, la in atlas.layers.items()},
                               "sheets": {n: sheet_name(n) for n in atlas.layers}, "patch_size": size}
    atomic_write_json(out / INDEX, index)
    atomic_write_bytes(out / PAGE, atlas_page(atlas, channels, title).encode())
    return out / PAGE


def _png(image: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def atlas_page(atlas: ChannelAtlas, channels: int | None, title: str) -> str:
    """A standalone page (no scripts, no network): per layer its receptive field, its contact sheet
    and, folded, each shown channel's top photos and values."""
    parts = [f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}</title>",
             "<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px}"
             "img{image-rendering:pixelated;border:1px solid #ccc}td,th{padding:2px 8px;text-align:left}"
             "nav a{margin-right:1em}</style>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p>{len(atlas.photos)} photos, one pass in {atlas.seconds:.1f} s. Each row is a channel; "
             "its patches are the receptive fields of the positions where it fired most, one per photo, "
             "strongest first. A yellow outline marks the winning position's own cell where the field is "
             "much wider than it.</p>",
             "<nav>" + "".join(f'<a href="#{file_safe(n)}">{html.escape(n)}</a>' for n in atlas.layers)
             + "</nav>"]
    for name, layer in atlas.layers.items():
        f = layer.field
        shown = shown_channels(layer, channels)
        parts.append(f'<h2 id="{file_safe(name)}">{html.escape(name)}</h2><p>{layer.channels} channels '
                     f"({len(shown)} shown), {f.output_size[0]}×{f.output_size[1]} positions; receptive "
                     f"field {f.rows.size}×{f.cols.size} px, stride {f.rows.jump} px, on a "
                     f"{f.input_size[0]}×{f.input_size[1]} input.</p>")
        parts.append(f'<img src="{sheet_name(name)}" alt="top patches of {html.escape(name)}">')
        parts.append("<details><summary>top photos per channel</summary>"
                     + _channel_table(atlas, layer, shown) + "</details>")
    return "\n".join(parts) + "\n</html>\n"


def _channel_table(atlas: ChannelAtlas, layer: LayerAtlas, shown: Sequence[int]) -> str:
    rows = []
    for c in shown:
        cells = ", ".join(f"{html.escape(Path(atlas.photos[p.photo]).name)} ({p.value:.3g})"
                          for p in layer.patches(c))
        rows.append(f"<tr><td>{c}</td><td>{cells}</td></tr>")
    return "<table><tr><th>channel</th><th>photo (value)</th></tr>" + "".join(rows) + "</table>"


def read_index(out: Path) -> dict | None:
    """The atlas index written by `write_atlas`, or None when there is none."""
    path = out / INDEX
    return json.loads(path.read_text()) if path.is_file() else None
