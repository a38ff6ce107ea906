"""Training augmentation: one operation per photo, a registry of named ops, tensors of the right shape."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from PIL import Image

from monkeysee.data import augment
from monkeysee.data.augment import AUGMENTATIONS, DEFAULT_OPS, AugmentConfig, build_ops, train_transform
from monkeysee.data.transforms import to_normalized_tensor
from monkeysee.errors import ConfigError
from monkeysee.models.registry import Preprocess

PRE = Preprocess(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _photo(size: tuple[int, int] = (48, 40)) -> Image.Image:
    im = Image.new("RGB", size, (20, 120, 220))
    im.paste((250, 10, 10), (0, 0, size[0] // 3, size[1]))  # red stripe on the left
    return im


def test_default_ops_are_the_original_set_and_registered() -> None:
    assert (
        AugmentConfig().ops
        == DEFAULT_OPS
        == (
            "identity",
            "hflip",
            "rotate",
            "affine",
            "blur",
            "color",
            "crop",
            "grayscale",
        )
    )
    assert set(DEFAULT_OPS) <= set(AUGMENTATIONS)


def test_output_shape_and_dtype() -> None:
    torch.manual_seed(0)
    x = train_transform(PRE, AugmentConfig())(_photo())
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32


@pytest.mark.parametrize("op", DEFAULT_OPS)
def test_each_op_keeps_an_rgb_image_of_input_size(op: str) -> None:
    torch.manual_seed(0)
    out = build_ops(PRE, AugmentConfig(ops=(op,)))[op](_photo((32, 32)))
    assert out.size == (32, 32) and out.mode == "RGB"


def test_exactly_one_op_per_photo(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting(name: str):
        def build(cfg: AugmentConfig, pre: Preprocess):
            def op(im: Image.Image) -> Image.Image:
                calls.append(name)
                return im

            return op

        return build

    for name in ("op_a", "op_b", "op_c"):
        monkeypatch.setitem(AUGMENTATIONS, name, counting(name))
    transform = train_transform(PRE, AugmentConfig(ops=("op_a", "op_b", "op_c")))
    torch.manual_seed(0)
    for n in range(1, 31):
        transform(_photo())
        assert len(calls) == n
    assert set(Counter(calls)) == {"op_a", "op_b", "op_c"}  # every op gets drawn


def test_hflip_only_with_a_full_crop_is_an_exact_mirror() -> None:
    cfg = AugmentConfig(ops=("hflip",), base_scale=(1.0, 1.0), base_ratio=(1.0, 1.0))
    im = _photo((32, 32))
    x = train_transform(PRE, cfg)(im)
    expected = to_normalized_tensor(PRE)(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    torch.testing.assert_close(x, expected, atol=1 / 64, rtol=0)  # bicubic same-size resample
    assert x[0, 16, -1] > 1.5 and x[0, 16, 0] < 0  # red stripe now on the right


def test_grayscale_only_gives_equal_channels() -> None:
    x = train_transform(PRE, AugmentConfig(ops=("grayscale",)))(_photo())
    torch.testing.assert_close(x[0], x[1])
    torch.testing.assert_close(x[1], x[2])


def test_unknown_op_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        AugmentConfig(ops=("hflip", "sparkle"))
    assert "'sparkle'" in info.value.problem
    assert all(name in info.value.fix for name in DEFAULT_OPS)
    with pytest.raises(ConfigError):
        AugmentConfig(ops=())


def test_bad_crop_scale() -> None:
    with pytest.raises(ConfigError, match="base_scale"):
        AugmentConfig(base_scale=(0.0, 1.0))


def test_config_round_trip_and_typo_guard() -> None:
    cfg = AugmentConfig(ops=["hflip", "blur"], rotate_degrees=5.0)  # a list is accepted and frozen
    assert cfg.ops == ("hflip", "blur")
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="rotate_degree"):
        AugmentConfig.from_dict({"rotate_degree": 5})


def test_registry_decorator_adds_an_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(augment, "AUGMENTATIONS", dict(AUGMENTATIONS))
    augment.augmentation("solarize_test")(lambda cfg, pre: lambda im: im)
    assert "solarize_test" in augment.AUGMENTATIONS
    assert "solarize_test" not in AUGMENTATIONS
