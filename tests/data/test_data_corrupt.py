"""The corruption suite: every kind degrades the way its name says, by the amount its severity says."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from monkeysee.data.corrupt import CORRUPTIONS, REFERENCE_POINTS, corrupt
from monkeysee.errors import ConfigError


def _texture(size: tuple[int, int] = (96, 80), seed: int = 0) -> Image.Image:
    """Mid-grey random texture (values 64..191): detail everywhere, no clipping from mild changes."""
    rng = np.random.default_rng(seed)
    x = rng.integers(64, 192, (size[1], size[0], 3))
    return Image.fromarray(x.astype(np.uint8), "RGB")


def _grey(value: int, size: tuple[int, int] = (128, 128)) -> Image.Image:
    return Image.new("RGB", size, (value, value, value))


def _f(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def _laplacian_var(image: Image.Image) -> float:
    g = _f(image).mean(axis=2)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap[8:-8, 8:-8].var())  # away from the borders


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_every_kind_keeps_size_and_mode_and_is_seeded(name: str) -> None:
    im = _texture()
    a = corrupt(im, name, 3, np.random.default_rng(7))
    b = corrupt(im, name, 3, np.random.default_rng(7))
    assert a.size == im.size and a.mode == "RGB"
    assert np.array_equal(_f(a), _f(b))
    assert not np.array_equal(_f(a), _f(im))  # it does something
    assert np.array_equal(_f(im), _f(_texture()))  # and leaves its input alone


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_every_kind_gets_worse_with_severity(name: str) -> None:
    im = _texture((128, 128))
    change = [np.abs(_f(corrupt(im, name, s, np.random.default_rng(1))) - _f(im)).mean() for s in (1, 3, 5)]
    assert change[0] < change[1] < change[2]


def test_the_reference_settings_are_severity_3_of_their_kinds() -> None:
    params = {p.label: CORRUPTIONS[p.kind].parameter(p.severity) for p in REFERENCE_POINTS}
    assert params == {
        "Gaussian blur radius 3 px": 3.0,
        "JPEG quality 10": 10.0,
        "noise sigma 25": 25.0,
        "dark x0.3": 0.3,
        "64 px short side": 64.0,
    }


def test_fractional_severity_interpolates_and_range_is_checked() -> None:
    blur = CORRUPTIONS["gaussian_blur"]
    assert blur.parameter(3.5) == pytest.approx(3.75)  # halfway between radius 3 and 4.5
    with pytest.raises(ConfigError, match="severity"):
        blur.parameter(0.5)
    with pytest.raises(ValueError, match="RGB"):
        blur(Image.new("L", (8, 8)), 1, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="'sparkle'"):
        corrupt(_texture(), "sparkle", 1, np.random.default_rng(0))


def test_gaussian_blur_lowers_laplacian_variance_as_an_ideal_gaussian_does() -> None:
    im = _texture((160, 160))
    radius = 1.0  # larger radii hit the floor set by rounding to uint8
    # An ideal Gaussian multiplies white noise's spectrum by exp(-sigma² |w|²); the discrete Laplacian's
    # own response is (2cos wx + 2cos wy - 4). The expected variance ratio is their power-weighted mean.
    w = 2 * math.pi * np.fft.fftfreq(160)
    wx, wy = np.meshgrid(w, w)
    lap = (2 * np.cos(wx) + 2 * np.cos(wy) - 4) ** 2
    expected = float((lap * np.exp(-(radius**2) * (wx**2 + wy**2))).mean() / lap.mean())
    blurred = CORRUPTIONS["gaussian_blur"].apply(im, radius, np.random.default_rng(0))
    ratio = _laplacian_var(blurred) / _laplacian_var(im)
    assert expected == pytest.approx(0.00558, abs=1e-5)  # the computed factor: ~180x less
    assert ratio == pytest.approx(expected, rel=0.2)  # PIL approximates the Gaussian with box blurs


def test_motion_blur_smears_a_point_into_a_streak_of_the_given_length() -> None:
    dot = np.zeros((61, 61, 3), np.uint8)
    dot[30, 30] = 255
    out = _f(CORRUPTIONS["motion_blur"].apply(Image.fromarray(dot), 13.0, np.random.default_rng(3)))
    ys, xs = np.nonzero(out[..., 0])
    extent = math.hypot(xs.max() - xs.min(), ys.max() - ys.min())
    assert 11.0 <= extent <= 14.2  # ~13 px long, measured corner to corner of the lit pixels
    assert out[..., 0].sum() == pytest.approx(255, abs=14)  # light is conserved (up to rounding)


def test_jpeg_q10_makes_8x8_blocks() -> None:
    yy, xx = np.mgrid[0:128, 0:128]
    smooth = np.stack([xx * 1.5 + yy * 0.5, 60 + yy * 1.2, 200 - xx * 0.8], axis=-1)
    im = Image.fromarray(smooth.clip(0, 255).astype(np.uint8))

    def blockiness(image: Image.Image) -> float:
        g = _f(image).mean(axis=2)
        step = np.abs(np.diff(g, axis=1))  # step[:, j] is between columns j and j+1
        at_edges = step[:, 7::8].mean()
        inside = np.delete(step, np.s_[7::8], axis=1).mean()
        return float(at_edges / max(inside, 1e-9))

    out = corrupt(im, "jpeg", 3, np.random.default_rng(0))
    assert np.abs(_f(out) - _f(im)).mean() > 1.0
    assert blockiness(im) == pytest.approx(1.0, abs=0.05)  # a gradient has no block structure
    assert blockiness(out) > 2.0  # steps concentrate on the 8-px block edges


def test_gaussian_noise_has_the_stated_sigma() -> None:
    im = _grey(128, (200, 200))
    out = corrupt(im, "gaussian_noise", 3, np.random.default_rng(0))
    assert (_f(out) - 128).std() == pytest.approx(25.0, rel=0.02)
    assert (_f(out) - 128).mean() == pytest.approx(0.0, abs=0.3)


def test_sensor_noise_is_shot_plus_read_noise() -> None:
    kind = CORRUPTIONS["sensor_noise"]
    full_well = kind.parameter(3)
    for value in (32, 200):
        out = kind(_grey(value, (200, 200)), 3, np.random.default_rng(0))
        electrons = value * full_well / 255
        expected = math.sqrt(electrons + 2.0**2) * 255 / full_well
        assert (_f(out) - value).std() == pytest.approx(expected, rel=0.05)  # brighter = noisier


def test_dark_scales_luminance_to_the_factor() -> None:
    im = _texture()
    out = corrupt(im, "dark", 3, np.random.default_rng(0))
    assert _f(out).mean() / _f(im).mean() == pytest.approx(0.3, abs=0.005)
    assert np.abs(_f(out) - 0.3 * _f(im)).max() <= 0.5  # nothing but the scaling (and rounding)


def test_low_light_is_dark_with_a_little_noise() -> None:
    im = _grey(160, (200, 200))
    out = _f(corrupt(im, "low_light", 3, np.random.default_rng(0)))
    assert out.mean() / 160 == pytest.approx(0.3, abs=0.01)
    assert 1.5 < out.std() < 8.0  # visible grain, unlike plain 'dark'


def test_overexposure_clips_highlights() -> None:
    im = _texture()
    out = _f(corrupt(im, "overexposure", 3, np.random.default_rng(0)))
    assert (_f(im) == 255).mean() == 0.0
    assert (out == 255).mean() > 0.5  # values above 255/2.3 = 111 all clip


def test_low_resolution_removes_frequencies_above_the_new_nyquist() -> None:
    im = _texture((256, 256))
    out = corrupt(im, "low_resolution", 3, np.random.default_rng(0))  # down to 64 px, back to 256

    def high_energy(image: Image.Image) -> float:
        g = _f(image).mean(axis=2)
        spec = np.abs(np.fft.fft2(g - g.mean())) ** 2
        f = np.abs(np.fft.fftfreq(256))
        high = (f[:, None] > 0.125) | (f[None, :] > 0.125)  # 64/256 px keeps at most 0.125 cycles/px
        return float(spec[high].sum() / spec.sum())

    assert high_energy(im) > 0.9  # white-ish noise: most energy is high
    assert high_energy(out) < 0.12  # what is left is bilinear up-sampling's staircase, not photo detail
    assert corrupt(_texture((60, 50)), "low_resolution", 3, np.random.default_rng(0)).size == (60, 50)


@pytest.mark.parametrize("name", ["bars", "wire_mesh"])
@pytest.mark.parametrize("severity", [1, 3, 5])
def test_fences_cover_the_intended_fraction(name: str, severity: int) -> None:
    im = _grey(255, (240, 200))  # white: every painted (dark) pixel is visible
    out = _f(corrupt(im, name, severity, np.random.default_rng(severity)))
    covered = float((out.max(axis=2) < 200).mean())
    assert covered == pytest.approx(CORRUPTIONS[name].parameter(severity), abs=0.03)


def test_glare_veils_unevenly() -> None:
    im = _texture((128, 128))
    out = _f(corrupt(im, "glare", 3, np.random.default_rng(0)))
    assert out.mean() > _f(im).mean() + 20
    assert out.std() < 0.8 * _f(im).std()


def test_contrast_shrinks_the_spread_by_the_factor() -> None:
    im = _texture()
    out = corrupt(im, "contrast", 3, np.random.default_rng(0))
    assert _f(out).std() / _f(im).std() == pytest.approx(0.3, abs=0.01)
    assert _f(out).mean() == pytest.approx(_f(im).mean(), abs=0.5)
