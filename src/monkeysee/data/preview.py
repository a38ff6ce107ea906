"""A picture of what augmentation does: each row is one photo as the model sees it at eval time,
followed by augmented versions labelled with the operation drawn."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from monkeysee.data.augment import AugmentConfig, base_crop, build_ops
from monkeysee.data.images import load_rgb
from monkeysee.data.layout import Sample
from monkeysee.data.preprocess import Preprocess
from monkeysee.data.species import Species
from monkeysee.data.transforms import denormalize, eval_transform, to_normalized_tensor
from monkeysee.errors import DataError, ImageError

_LABEL_HEIGHT = 20
_GAP = 4


def augmentation_grid(
    samples: Sequence[Sample],
    pre: Preprocess,
    cfg: AugmentConfig | None = None,
    n_photos: int = 6,
    n_augmented: int = 5,
    seed: int = 0,
    species: Sequence[Species] | None = None,
) -> Image.Image:
    """Grid image: `n_photos` rows of [eval view, `n_augmented` training views], each tile captioned.

    Photos are drawn from as many species as possible; unreadable ones are passed over. The same
    seed gives the same picture, and the caller's random state is left untouched.
    """
    cfg = cfg or AugmentConfig()
    rng = random.Random(seed)
    chosen = _pick(samples, n_photos, rng)
    if not chosen:
        raise DataError("no readable photos to preview", fix="point at a folder that holds photos")
    evaluate, crop, ops, normalize = (
        eval_transform(pre),
        base_crop(pre, cfg),
        build_ops(pre, cfg),
        to_normalized_tensor(pre),
    )
    names = list(ops)

    size = pre.input_size
    cell_w, cell_h = size + _GAP, size + _LABEL_HEIGHT + _GAP
    grid = Image.new("RGB", (cell_w * (n_augmented + 1) + _GAP, cell_h * len(chosen) + _GAP), "white")
    draw = ImageDraw.Draw(grid)
    font = _font()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for row, (sample, image) in enumerate(chosen):
            who = species[sample.target].display_name if species else f"class {sample.target}"
            tiles = [(evaluate(image), f"eval: {who}")]
            for _ in range(n_augmented):
                op = rng.choice(names)
                tiles.append((normalize(ops[op](crop(image))), op))
            for col, (tensor, caption) in enumerate(tiles):
                x, y = _GAP + col * cell_w, _GAP + row * cell_h
                grid.paste(_to_pil(denormalize(tensor, pre)), (x, y))
                draw.text((x + 2, y + size + 2), caption[:40], fill="black", font=font)
    return grid


def _pick(samples: Sequence[Sample], n: int, rng: random.Random) -> list[tuple[Sample, Image.Image]]:
    """Up to `n` readable photos, one species at a time in random order, so rows show variety."""
    by_class: dict[int, list[Sample]] = defaultdict(list)
    for s in sorted(samples, key=lambda s: (s.target, str(s.path))):
        by_class[s.target].append(s)
    for group in by_class.values():
        rng.shuffle(group)
    order = list(by_class)
    rng.shuffle(order)
    chosen: list[tuple[Sample, Image.Image]] = []
    while len(chosen) < n and any(by_class.values()):
        for target in order:
            if len(chosen) >= n or not by_class[target]:
                continue
            sample = by_class[target].pop()
            try:
                chosen.append((sample, load_rgb(sample.path)))
            except ImageError:
                continue
    return chosen


def _to_pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray((x.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=13)
    except (TypeError, OSError):  # older Pillow or no FreeType: the small bitmap font
        return ImageFont.load_default()
