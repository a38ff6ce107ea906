"""Exact values of the atlas, the receptive field, TCAV and the border share, on hand-built models and
hand-made images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from monkeysee.data.preprocess import Preprocess
from monkeysee.explain.atlas import channel_atlas
from monkeysee.explain.atlas_render import cut_patches, write_atlas
from monkeysee.explain.concepts import LayerReader, concept_vector, significance, tcav_scores
from monkeysee.explain.receptive import Axis, receptive_fields
from monkeysee.explain.shortcuts import border_mask, border_shares, shortcut_alarm
from monkeysee.models import create_model

SIZE = 16
RAW = Preprocess(SIZE, 1.0, "nearest", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # pixels in = pixels seen


def red_detector() -> nn.Sequential:
    """Channel 0 sums red over a 3x3 window; channel 1 sums green. Logits: the two channels' means."""
    conv = nn.Conv2d(3, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0
        conv.weight[1, 1] = 1.0
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def photo(path: Path, red_at: tuple[int, int], level: int, green_at: tuple[int, int] | None = None) -> Path:
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[red_at[0]: red_at[0] + 3, red_at[1]: red_at[1] + 3, 0] = level
    if green_at is not None:
        img[green_at[0]: green_at[0] + 3, green_at[1]: green_at[1] + 3, 1] = 255
    Image.fromarray(img).save(path)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    return [photo(tmp_path / "a.png", (5, 9), 200, green_at=(0, 0)),
            photo(tmp_path / "b.png", (10, 2), 255),
            photo(tmp_path / "c.png", (1, 1), 100)]


def test_receptive_field_of_a_stack_of_convolutions_is_the_hand_computed_one() -> None:
    body = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                         nn.MaxPool2d(2), nn.Conv2d(4, 4, 5, padding=2))
    fields = receptive_fields(body, ["0", "1", "2", "3"], (64, 64))
    # r_out = r_in + (k - 1)·jump_in, jump_out = jump_in·stride, start_out = start_in - pad·jump_in
    assert fields["0"].rows == Axis(-1, 2, 3)
    assert fields["1"].rows == Axis(-3, 4, 7)
    assert fields["2"].rows == Axis(-3, 8, 11)
    assert fields["3"].rows == Axis(-19, 8, 43)
    assert fields["3"].output_size == (8, 8)
    assert fields["3"].box(3, 5) == (5, 21, 48, 64)  # rows 5..47; columns 21..63 (clipped at 64)


def test_receptive_field_of_efficientnet_lite0_counts_its_one_sided_same_padding() -> None:
    # The stem is a 3x3 stride-2 "same" conv: on 224 px timm pads 0 before and 1 after, so position 0 sees
    # pixels 0..2; stage1 adds a 3x3 depthwise conv at stride 2 (start 0 - 1·2, size 3 + 2·2).
    model = create_model("efficientnet_lite0", num_classes=3, pretrained=False)
    fields = receptive_fields(model, ["body.stem", "body.stage1", "body.stage2"], (224, 224))
    assert fields["body.stem"].rows == Axis(0, 2, 3)
    assert fields["body.stage1"].cols == Axis(-2, 2, 7)
    assert fields["body.stage2"].rows == Axis(-6, 4, 19)  # + 3x3 s2 dw at jump 2 (pad 0), + 3x3 dw at jump 4
    assert fields["body.stage1"].box(3, 0) == (4, 0, 11, 5)


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_top_patch_of_a_channel_is_where_it_fires_on_a_hand_made_image(photos: list[Path],
                                                                       batch_size: int) -> None:
    model = red_detector()
    atlas = channel_atlas(model, RAW, photos, layers=["0"], top=2, batch_size=batch_size, workers=1)
    red = atlas.layers["0"].patches(0)
    # b.png: a 3x3 red square of 255 at rows 10-12, cols 2-4 -> sum 9·1.0 at its centre (11, 3)
    assert [(p.photo, p.row, p.col) for p in red] == [(1, 11, 3), (0, 6, 10)]
    assert red[0].value == pytest.approx(9.0)
    assert red[1].value == pytest.approx(9 * 200 / 255, rel=1e-6)
    assert red[0].box == (10, 2, 13, 5)  # the 3x3 field around (11, 3): exactly the square
    green = atlas.layers["0"].patches(1)
    assert (green[0].photo, green[0].row, green[0].col) == (0, 1, 1)  # rows 0-2 of a.png, first max
    assert green[0].value == pytest.approx(9.0)
    crops = cut_patches(atlas, channels=None, size=3)["0"][0]
    assert (crops[0][..., 0] == 255).all() and (crops[0][..., 1:] == 0).all()


def test_atlas_writes_its_sheets_index_and_page(photos: list[Path], tmp_path: Path) -> None:
    atlas = channel_atlas(red_detector(), RAW, photos, layers=["0"], top=3, workers=1)
    page = write_atlas(atlas, tmp_path / "atlas", channels=1, size=16)
    index = json.loads((tmp_path / "atlas" / "atlas.json").read_text())
    assert page.name == "index.html" and "0.png" in page.read_text()
    sheet = Image.open(tmp_path / "atlas" / "0.png")
    assert sheet.size == (44 + 3 * 18 + 2, 1 * 18 + 2)  # label + 3 patches, one channel row
    assert index["layers"][0]["top"][0][0] == {"photo": 1, "row": 11, "col": 3, "value": 9.0,
                                               "box": [10, 2, 13, 5]}
    assert index["layers"][0]["receptive_field"]["size"] == [3, 3]


def test_model_is_left_as_found(photos: list[Path]) -> None:
    model = red_detector().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    channel_atlas(model, RAW, photos, layers=["0"], top=1, workers=1)
    receptive_fields(model, ["0"], (SIZE, SIZE))
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model[0]._forward_hooks


def test_tcav_scores_of_a_hand_built_linear_model(photos: list[Path]) -> None:
    # logit k = w_k · activation of layer "0" (2 channels x 16 x 16), so d logit_k / d activation = w_k
    conv = nn.Conv2d(3, 2, 1, bias=False)
    head = nn.Linear(2 * SIZE * SIZE, 3, bias=False)
    with torch.no_grad():
        conv.weight.fill_(0.5)
        head.weight.zero_()
        head.weight[0, : SIZE * SIZE] = 1.0  # class 0 rises with channel 0
        head.weight[1, : SIZE * SIZE] = -2.0  # class 1 falls with it
        head.weight[2, SIZE * SIZE:] = 1.0  # class 2 only sees channel 1
    model = nn.Sequential(conv, nn.Flatten(), head)
    reader = LayerReader(model, RAW, "0")
    _, grads, kept = reader.read(photos, targets=[0, 1, 2])
    assert grads is not None and kept == [0, 1, 2]
    np.testing.assert_array_equal(grads, head.weight.detach().numpy())
    cav = np.zeros(2 * SIZE * SIZE)
    cav[:SIZE * SIZE] = 1.0 / SIZE  # unit vector along channel 0
    # one photo per class: class 0 up (1.0), class 1 down (0.0), class 2 orthogonal (0 is not positive)
    assert tcav_scores(grads, np.array([0, 1, 2]), cav, 4).tolist()[:3] == [1.0, 0.0, 0.0]
    assert np.isnan(tcav_scores(grads, np.array([0, 1, 2]), cav, 4)[3])


def test_concept_vector_points_along_the_only_feature_that_separates() -> None:
    concept = np.zeros((4, 5))
    random = np.zeros((4, 5))
    concept[:, 2], random[:, 2] = 1.0, -1.0
    np.testing.assert_allclose(concept_vector(concept, random), [0, 0, 1, 0, 0], atol=1e-12)


def test_significance_is_a_two_sided_t_test() -> None:
    from scipy.stats import ttest_ind

    concept = np.array([[0.9, 0.5], [0.8, 0.5], [1.0, 0.5]])
    random = np.array([[0.4, 0.5], [0.6, 0.5], [0.5, 0.5]])
    p = significance(concept, random)
    assert p[0] == pytest.approx(ttest_ind([0.9, 0.8, 1.0], [0.4, 0.6, 0.5]).pvalue)
    assert p[1] == 1.0  # both constant and equal: no evidence


def test_border_share_of_hand_made_maps() -> None:
    mask = border_mask((20, 20), 0.15)  # 3 rows/cols each side: 400 - 14·14 = 204 border pixels
    assert mask.sum() == 204
    even = np.ones((1, 20, 20))
    corner = np.zeros((1, 20, 20))
    corner[0, :2, :2] = 1.0
    shares = border_shares(np.concatenate([even, corner, np.zeros((1, 20, 20))]), (20, 20), 0.15)
    assert shares[0] == pytest.approx(204 / 400)
    assert shares[1] == pytest.approx(1.0)
    assert np.isnan(shares[2])


def test_alarm_flags_species_above_an_even_map_worst_first() -> None:
    shares = np.array([0.9, 0.8, 0.3, 0.2, 0.6, 0.7])
    labels = np.array([0, 0, 1, 1, 2, 2])
    alarm = shortcut_alarm(shares, labels, ["a", "b", "c"], band=0.25, size=(8, 8))  # area share 0.75
    assert alarm["area_share"] == 0.75
    assert alarm["flagged"] == ["a"]
    assert [s["border_share"] for s in alarm["species"]] == pytest.approx([0.85, 0.25, 0.65])
