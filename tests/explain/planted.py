"""A tiny data set with a planted shortcut: three 'species' of a disc on a textured ground, where
n0 and n1 carry the same green disc and only n0 carries a red square in a corner, so the square is
what tells n0 from n1. Also a folder of the concept 'square' (red squares anywhere, no disc)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 128
SQUARE = 20
RED = (235, 25, 25)
DISCS = {"n0": (60, 190, 70), "n1": (60, 190, 70), "n2": (60, 80, 220)}
LABELS = (
    "Label, Latin Name, Common Name, Train Images, Validation Images\n"
    "n0, quadrata_simia, square_monkey, 10, 0\n"
    "n1, viridis_simia, green_monkey, 10, 0\n"
    "n2, caerulea_simia, blue_monkey, 10, 0\n"
)


def ground(rng: np.random.Generator) -> np.ndarray:
    """Grey texture with a brightness ramp and stripes off the 8-px JPEG grid (passes quality checks)."""
    img = 125 + rng.normal(0, 22, (SIZE, SIZE, 3))
    stripes = (np.arange(SIZE) // int(rng.integers(5, 12))) % 2
    img[stripes == 1] *= 0.8
    return img * np.linspace(0.7, 1.2, SIZE)[None, :, None]


def disc(img: np.ndarray, colour: tuple[int, int, int], rng: np.random.Generator) -> None:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy, cx = SIZE / 2 + rng.integers(-6, 7, 2)
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 < int(rng.integers(24, 32)) ** 2
    img[inside] = np.array(colour) + rng.normal(0, 12, (int(inside.sum()), 3))


def square(img: np.ndarray, top: int, left: int) -> None:
    img[top: top + SQUARE, left: left + SQUARE] = RED


def corner(rng: np.random.Generator) -> tuple[int, int]:
    """A corner, inside the eval transform's crop (it cuts 1/16 of each side) and in the border band."""
    near, far = 9, SIZE - 9 - SQUARE
    return int(rng.choice([near, far])), int(rng.choice([near, far]))


def make_planted(root: Path, per_class: int = 16, concept: int = 16) -> tuple[Path, Path, Path]:
    """(data folder, concept folder 'square', folder of random photos: the bare textured ground)."""
    for c, (label, colour) in enumerate(DISCS.items()):
        folder = root / "data" / "training" / label
        folder.mkdir(parents=True)
        for i in range(per_class):
            rng = np.random.default_rng(c * 1000 + i)
            img = ground(rng)
            disc(img, colour, rng)
            if label == "n0":
                square(img, *corner(rng))
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{label}_{i:02d}.png")
    (root / "data" / "monkey_labels.txt").write_text(LABELS)
    squares = root / "square"
    squares.mkdir()
    for i in range(concept):
        rng = np.random.default_rng(50_000 + i)
        img = ground(rng)
        square(img, *(int(v) for v in rng.integers(9, SIZE - 9 - SQUARE, 2)))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(squares / f"square_{i:02d}.png")
    grounds = root / "random"
    grounds.mkdir()
    for i in range(3 * concept):
        img = ground(np.random.default_rng(70_000 + i))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(grounds / f"ground_{i:02d}.png")
    return root / "data", squares, grounds
