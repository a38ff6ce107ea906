"""A planted shortcut is found three ways: by the atlas, by the concept test, by the alarm.

Three 'species' (tests/explain/planted.py): n0 and n1 are the same green disc, and only n0 carries a
red square in a corner; n2 is a blue disc. A tiny run (the tests' usual recipe) learns the square as
the mark of n0. Slow: training and the gradient passes take minutes on a shared CPU; the pieces are
pinned by exact values in test_explain_atlas_exact.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from monkeysee.data.images import load_rgb
from monkeysee.data.transforms import denormalize, eval_transform
from monkeysee.explain.atlas import channel_atlas
from monkeysee.explain.concepts import concepts_for_run
from monkeysee.explain.shortcuts import scan_shortcuts
from monkeysee.rundir import RunDir
from tests.conftest import tiny_config
from tests.explain.planted import make_planted

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    from monkeysee.train.trainer import Trainer

    root = tmp_path_factory.mktemp("planted")
    data, squares, grounds = make_planted(root)
    run = root / "run"
    Trainer(tiny_config(data, run, test_fraction=0.25), run).run(log=lambda _: None)
    yield run, squares, grounds


def red_pixels(path: str, run: RunDir) -> np.ndarray:
    """(H, W) bool: where the model's input crop of the photo is the planted red."""
    pre = run.read_manifest().preprocess
    seen = denormalize(eval_transform(pre)(load_rgb(path)), pre).mul(255).permute(1, 2, 0).numpy()
    return (seen[..., 0] > 180) & (seen[..., 1] < 80) & (seen[..., 2] < 80)


def test_atlas_has_a_channel_whose_top_patches_are_the_square(planted: tuple[Path, Path, Path]) -> None:
    run = RunDir(planted[0])
    loaded = run.load()
    photos = [s.path for s in run.read_splits().split("train")]
    layers = ["body.stem", "body.stage1", "body.stage2", "body.stage3"]  # fields well inside the photo
    atlas = channel_atlas(loaded.model, loaded.manifest.preprocess, photos, layers, top=5)
    red = [red_pixels(p, run) for p in atlas.photos]
    square_channels = []
    for name, layer in atlas.layers.items():
        for c in range(layer.channels):
            patches = layer.patches(c)
            on_n0 = all(Path(atlas.photos[p.photo]).parent.name == "n0" for p in patches)
            share = min(red[p.photo][p.box[0]: p.box[2], p.box[1]: p.box[3]].mean() for p in patches)
            if on_n0 and share >= 0.35:
                square_channels.append((name, c))
    assert square_channels, "no channel's top 5 patches all show the square"


def test_concept_square_moves_that_species_only_and_the_alarm_names_it(
    planted: tuple[Path, Path, Path],
) -> None:
    run, squares, grounds = planted
    (square,) = concepts_for_run(run, [squares], random=grounds, split="train", runs=20, precision="fp32")
    assert square.concept == "square"
    assert square.moves == [True, False, False]
    assert square.p_values[0] < 0.01
    assert square.scores[0] > square.random_scores[0]
    alarm = scan_shortcuts(run, "train", precision="fp32")
    assert alarm["flagged"] == ["square monkey"]
    n0 = alarm["species"][0]
    assert n0["concepts"] == ["square"] and n0["border_share"] > alarm["area_share"]
    assert all(not s["reasons"] for s in alarm["species"][1:])
