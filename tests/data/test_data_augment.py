"""Training augmentation: one operation per photo, a registry of named ops, tensors of the right shape,
degradations at a drawn severity."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from monkeysee.data import augment
from monkeysee.data.augment import (
    AUGMENTATIONS,
    DEFAULT_OPS,
    AugmentConfig,
    Builder,
    Degrade,
    build_ops,
    train_transform,
)
from monkeysee.data.corrupt import CORRUPTIONS, Corruption
from monkeysee.data.preprocess import Preprocess
from monkeysee.data.transforms import to_normalized_tensor
from monkeysee.errors import ConfigError
from monkeysee.registry import Registry

PRE = Preprocess(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _photo(size: tuple[int, int] = (48, 40)) -> Image.Image:
    im = Image.new("RGB", size, (20, 120, 220))
    im.paste((250, 10, 10), (0, 0, size[0] // 3, size[1]))  # red stripe on the left
    return im


RECORDED_OPS = ("identity", "hflip", "rotate", "affine", "blur", "color", "crop", "grayscale")


def _registry_copy() -> Registry[Builder]:
    copy: Registry[Builder] = Registry("augmentation")
    for name, builder in AUGMENTATIONS.items():
        copy.add(name, builder)
    return copy


def test_defaults_are_registered_and_degrade_a_good_share_of_views() -> None:
    ops = AugmentConfig().ops
    assert all(op in AUGMENTATIONS for op in ops) and len(set(ops)) == len(ops)
    assert set(build_ops(PRE, AugmentConfig())) == set(ops)  # every default builds
    assert "identity" in ops  # some views stay clean
    degrading = [op for op in ops if op in CORRUPTIONS]
    assert 0.4 <= len(degrading) / len(ops) <= 0.6  # one-of-N: about half the views are degraded
    # The five degradations of keepers' phone photos are trained for: blur, JPEG, noise, darkness,
    # low resolution.
    assert {"gaussian_blur", "jpeg", "gaussian_noise", "low_light", "low_resolution"} <= set(degrading)


def test_output_shape_and_dtype() -> None:
    torch.manual_seed(0)
    x = train_transform(PRE, AugmentConfig())(_photo())
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32


def _texture(size: tuple[int, int] = (32, 32)) -> Image.Image:
    """Noise at the input size: ops run on the base crop, which already has the model's size."""
    rng = np.random.default_rng(5)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("op", AUGMENTATIONS.names())
def test_each_op_is_deterministic_for_a_seed_and_leaves_its_input_alone(op: str) -> None:
    transform = build_ops(PRE, AugmentConfig(ops=(op,)))[op]
    photo = _texture()
    outputs = []
    for _ in range(2):
        torch.manual_seed(11)
        out = transform(photo)
        assert out.mode == "RGB" and out.size == photo.size
        outputs.append(np.asarray(out))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(np.asarray(photo), np.asarray(_texture()))


def test_exactly_one_op_per_photo(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting(name: str):
        def build(cfg: AugmentConfig, pre: Preprocess):
            def op(im: Image.Image) -> Image.Image:
                calls.append(name)
                return im

            return op

        return build

    monkeypatch.setattr(augment, "AUGMENTATIONS", _registry_copy())
    for name in ("op_a", "op_b", "op_c"):
        augment.AUGMENTATIONS.add(name, counting(name))
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
    monkeypatch.setattr(augment, "AUGMENTATIONS", _registry_copy())
    augment.augmentation("solarize_test")(lambda cfg, pre: lambda im: im)
    assert "solarize_test" in augment.AUGMENTATIONS
    assert "solarize_test" not in AUGMENTATIONS
    assert AugmentConfig(ops=("solarize_test",)).ops == ("solarize_test",)
    with pytest.raises(ValueError, match="registered twice"):
        augment.augmentation("solarize_test")(lambda cfg, pre: lambda im: im)


def test_every_corruption_kind_is_an_op() -> None:
    assert set(CORRUPTIONS) <= set(AUGMENTATIONS)


def test_degradation_severity_is_drawn_from_the_configured_range() -> None:
    seen: list[float] = []

    def record(image: Image.Image, parameter: float, rng: np.random.Generator) -> Image.Image:
        seen.append(parameter)
        return image

    kind = Corruption("record", record, levels=(1, 2, 3, 4, 5), unit="severity", description="")
    op = Degrade(kind, (2.0, 3.0))
    torch.manual_seed(0)
    for _ in range(200):
        op(_photo())
    assert 2.0 <= min(seen) < 2.1 and 2.9 < max(seen) <= 3.0
    assert len(set(seen)) == 200  # a fresh strength every view


def test_degradation_ops_follow_torch_seed_and_apply_their_corruption() -> None:
    cfg = AugmentConfig(ops=("dark",), base_scale=(1.0, 1.0), base_ratio=(1.0, 1.0), corrupt_severity=(3, 3))
    white = Image.new("RGB", (32, 32), (200, 200, 200))
    x = train_transform(PRE, cfg)(white)
    # dark x0.3 of 200 is 60 -> (60/255 - 0.5) / 0.25 in the normalised tensor.
    torch.testing.assert_close(x, torch.full((3, 32, 32), (60 / 255 - 0.5) / 0.25), atol=1e-5, rtol=0)
    noisy = train_transform(PRE, AugmentConfig(ops=("gaussian_noise",)))
    torch.manual_seed(3)
    a = noisy(_photo())
    torch.manual_seed(3)
    b = noisy(_photo())
    torch.manual_seed(4)
    c = noisy(_photo())
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_recorded_config_without_severity_loads_with_its_own_ops() -> None:
    recorded = {"ops": list(RECORDED_OPS), "base_scale": [0.6, 1.0], "rotate_degrees": 20.0}
    cfg = AugmentConfig.from_dict(recorded)
    assert cfg.ops == RECORDED_OPS  # a recorded run keeps its own ops, not the defaults
    assert cfg.corrupt_severity == (1.0, 4.0)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="corrupt_severity"):
        AugmentConfig(corrupt_severity=(0.5, 4.0))
