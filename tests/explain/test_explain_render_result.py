"""Pictures and files: overlays, figures, CamResult.save, activations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from monkeysee.data.species import Species
from monkeysee.errors import ConfigError
from monkeysee.explain import (
    CamResult,
    channel_grid,
    explain,
    heatmap,
    layer_activations,
    overlay,
    photo_names,
    resolve_species,
    side_by_side,
)
from monkeysee.explain.render import activation_overview, colormap_lut, most_active_channels, save_figure


def test_overlay_blends_with_the_requested_opacity():
    image = np.full((4, 6, 3), 100, dtype=np.uint8)
    cam = np.zeros((2, 3), dtype=np.float32)
    cam[0, 0] = 1.0
    lut = colormap_lut("inferno")
    assert np.array_equal(overlay(image, cam, alpha=0.0), image)
    only_map = overlay(image, np.ones((2, 3)), alpha=1.0)
    assert np.array_equal(only_map, np.broadcast_to(lut[255], (4, 6, 3)))
    half = overlay(image, np.zeros((4, 6)), alpha=0.5)
    assert np.array_equal(
        half,
        np.rint(0.5 * 100 + 0.5 * lut[0].astype(float))
        .astype(np.uint8)[None, None]
        .repeat(4, 0)
        .repeat(6, 1),
    )
    out = overlay(image, cam, alpha=0.5)
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8
    assert out[0, 0].sum() > out[3, 5].sum()  # hot corner is brighter (inferno: dark -> bright)


def test_overlay_rejects_what_it_cannot_draw():
    with pytest.raises(ValueError, match="uint8"):
        overlay(np.zeros((4, 4, 3), dtype=np.float32), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="alpha"):
        overlay(np.zeros((4, 4, 3), dtype=np.uint8), np.zeros((4, 4)), alpha=1.5)
    with pytest.raises(ConfigError, match=r"unknown colour map 'no-such-map'\. Fix: .*inferno"):
        heatmap(np.zeros((2, 2)), cmap="no-such-map")


def test_heatmap_is_rgb_and_clips():
    pic = heatmap(np.array([[-1.0, 0.0], [1.0, 2.0]]), "viridis")
    lut = colormap_lut("viridis")
    assert pic.shape == (2, 2, 3) and pic.dtype == np.uint8
    assert np.array_equal(pic[0, 0], lut[0]) and np.array_equal(pic[1, 1], lut[255])


def test_figures_render(tmp_path):
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    fig = side_by_side(image, {"Grad-CAM": image, "Score-CAM": image}, title="photo: howler")
    assert [ax.get_title() for ax in fig.axes] == ["photo", "Grad-CAM", "Score-CAM"]
    act = np.random.default_rng(0).random((10, 4, 4)).astype(np.float32)
    act[7] += 5
    grid = channel_grid(act, "body.stage3", n=4)
    assert "body.stage3" in grid.get_suptitle() and "10×4×4" in grid.get_suptitle()
    assert grid.axes[0].get_title().startswith("#7")
    assert most_active_channels(act, 3)[0] == 7 and len(most_active_channels(act, 99)) == 10
    over = activation_overview(image, {"body.stem": act, "body.head": act[:3]})
    path = save_figure(over, tmp_path / "o.png")
    assert Image.open(path).mode in {"RGB", "RGBA"}


def test_result_save_writes_overlays_maps_and_manifest(cnn, photos, tmp_path):
    images = np.zeros((3, 16, 16, 3), dtype=np.uint8)
    res = explain(
        cnn,
        photos,
        methods=("gradcam++",),
        class_names=["a", "b", "c", "d"],
        images=images,
        names=["p", "q", "r"],
    )["gradcam++"]
    files = res.save(tmp_path, alpha=0.3, cmap="viridis")
    assert {f.name for f in files} == {
        f"{n}__gradcampp{s}" for n in "pqr" for s in (".png", ".npy", "_layer.npy")
    } | {"gradcampp.json"}
    picture = Image.open(tmp_path / "q__gradcampp.png")
    assert picture.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(picture), res.overlays(alpha=0.3, cmap="viridis")[1])  # lossless
    np.testing.assert_array_equal(np.load(tmp_path / "q__gradcampp.npy"), res.upsampled[1])
    np.testing.assert_array_equal(np.load(tmp_path / "q__gradcampp_layer.npy"), res.maps[1])
    manifest = json.loads((tmp_path / "gradcampp.json").read_text())
    assert manifest["method"] == "gradcam++" and manifest["layer"] == "body.stage2"
    assert manifest["alpha"] == 0.3 and manifest["colormap"] == "viridis"
    assert manifest["photos"][1]["target"] == res.target_names[1]
    assert manifest["photos"][1]["files"]["overlay"] == "q__gradcampp.png"


def test_result_is_frozen_and_splits_and_joins(cnn, photos):
    res = explain(cnn, photos)["gradcam"]
    with pytest.raises(AttributeError):
        res.method = "x"
    one = res.photo(2)
    assert len(one) == 1 and np.array_equal(one.maps[0], res.maps[2]) and one.names == ("photo2",)
    joined = CamResult.concat([res.photo(0), res.photo(1), res.photo(2)])
    np.testing.assert_array_equal(joined.upsampled, res.upsampled)
    assert joined.target_indices == res.target_indices
    assert heatmap(res.upsampled[0]).shape == (16, 16, 3)
    assert res.overlays()[0].shape == (16, 16, 3)  # no photo kept: the coloured map alone


def test_layer_activations_of_every_stage(cnn, photos):
    acts = layer_activations(cnn, photos)
    assert list(acts) == ["body.stage1", "body.stage2"]
    assert acts["body.stage1"].shape == (3, 8, 8, 8) and acts["body.stage2"].shape == (3, 12, 8, 8)
    one = layer_activations(cnn, photos[0], ["body.stage2", "body.stage2.0"])
    assert list(one) == ["body.stage2", "body.stage2.0"] and one["body.stage2"].shape == (1, 12, 8, 8)
    torch.testing.assert_close(one["body.stage2"][0], acts["body.stage2"][0])
    # A sub-module works too: the stage's conv, before its ReLU.
    torch.testing.assert_close(one["body.stage2"], torch.relu(one["body.stage2.0"]))
    assert not acts["body.stage1"].requires_grad
    with pytest.raises(ConfigError, match=r"body\.stage1"):
        layer_activations(cnn, photos, ["stage1"])


def test_species_queries():
    species = [
        Species("n0", "mantled_howler", "alouatta_palliata"),
        Species("n1", "patas_monkey", "erythrocebus_patas"),
    ]
    for query in ("n1", "patas monkey", "Patas_Monkey", "Erythrocebus patas", "1", 1):
        assert resolve_species(query, species) == 1
    with pytest.raises(ConfigError) as info:
        resolve_species("gorilla", species)
    assert (
        "mantled howler" in str(info.value)
        and "Erythrocebus patas" in str(info.value)
        and "n0" in str(info.value)
    )
    with pytest.raises(ConfigError, match="out of range"):
        resolve_species(5, species)


def test_photo_names_are_unique():
    assert photo_names(["a/x.jpg", "b/x.png", "x-2.jpg", "c/x.jpg"]) == ["x", "x-2", "x-2-2", "x-3"]
