"""Photo corruptions like those of keepers' phone photos: blur, compression, noise, bad light, fences.

Each kind in `CORRUPTIONS` is a `Corruption`: called as `kind(image, severity, rng)` it returns a new PIL
RGB image of the same size. Severity runs 1 (mild) .. 5 (severe); each integer severity is one entry of
the kind's `levels` (its physical parameter: blur radius in px, JPEG quality, noise sigma, ...) and a
fractional severity interpolates between neighbouring levels, which is how training draws strengths.
All randomness comes from the numpy Generator passed in, so a seed gives the same picture.

Severity 3 of five kinds is the reference degradation of a keeper's phone photo (blur radius 3 px, JPEG
quality 10, noise sigma 25, darkened x0.3, a 64 px short side); `REFERENCE_POINTS` names them so a
benchmark reports accuracy on each.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from monkeysee.errors import ConfigError
from monkeysee.registry import Registry

Apply = Callable[[Image.Image, float, np.random.Generator], Image.Image]
MAX_SEVERITY = 5


@dataclass(frozen=True)
class Corruption:
    """One kind of degradation: `apply(image, parameter, rng)` and the parameter at severities 1..5."""

    name: str
    apply: Apply
    levels: tuple[float, ...]
    unit: str  # what the parameter measures, for tables: "radius px", "JPEG quality", ...
    description: str

    def __post_init__(self) -> None:
        if len(self.levels) != MAX_SEVERITY:
            raise ValueError(f"corruption {self.name!r} needs {MAX_SEVERITY} levels, got {len(self.levels)}")

    def parameter(self, severity: float) -> float:
        """The physical parameter at `severity` in [1, 5], linear between the integer levels."""
        if not 1.0 <= severity <= MAX_SEVERITY:
            raise ConfigError(
                f"{self.name} severity must be in [1, {MAX_SEVERITY}], got {severity}",
                fix="use 1 (mild) to 5 (severe)",
            )
        return float(np.interp(severity, np.arange(1, MAX_SEVERITY + 1), self.levels))

    def __call__(self, image: Image.Image, severity: float, rng: np.random.Generator) -> Image.Image:
        if image.mode != "RGB":
            raise ValueError(f"corruptions take RGB images, got mode {image.mode!r}")
        return self.apply(image, self.parameter(severity), rng)


CORRUPTIONS: Registry[Corruption] = Registry("corruption")


def corruption(name: str, levels: tuple[float, ...], unit: str) -> Callable[[Apply], Apply]:
    """Register `apply(image, parameter, rng)` as a corruption kind; its docstring is the description."""

    def register(apply: Apply) -> Apply:
        doc = (apply.__doc__ or "").strip().splitlines()
        CORRUPTIONS.add(name, Corruption(name, apply, tuple(float(v) for v in levels), unit,
                                         doc[0] if doc else name))
        return apply

    return register


def corrupt(image: Image.Image, name: str, severity: float, rng: np.random.Generator) -> Image.Image:
    """`image` degraded by the registered kind `name` at `severity` (1..5)."""
    return CORRUPTIONS.get(name)(image, severity, rng)


@dataclass(frozen=True)
class ReferencePoint:
    """A reference degradation of a keeper's photo, as a (kind, severity) pair of this suite."""

    label: str
    kind: str
    severity: int


REFERENCE_POINTS = (
    ReferencePoint("Gaussian blur radius 3 px", "gaussian_blur", 3),
    ReferencePoint("JPEG quality 10", "jpeg", 3),
    ReferencePoint("noise sigma 25", "gaussian_noise", 3),
    ReferencePoint("dark x0.3", "dark", 3),
    ReferencePoint("64 px short side", "low_resolution", 3),
)


# --- pixel helpers ----------------------------------------------------------------------------------------


def _to_float(image: Image.Image) -> np.ndarray:
    """(H, W, 3) float32 in [0, 255]."""
    return np.asarray(image, dtype=np.float32)


def _to_image(x: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8), "RGB")


def _shot_read_noise(
    x: np.ndarray, full_well: float, read_sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """Sensor noise on [0, 255] values: shot noise (white = `full_well` electrons) + Gaussian read noise.

    Shot noise uses the Gaussian approximation of the Poisson count (variance = mean), 3x cheaper than
    sampling Poisson and indistinguishable above a few electrons.
    """
    electrons = np.clip(x, 0, 255) * (full_well / 255.0)
    sigma = np.sqrt(electrons + read_sigma**2)
    electrons += sigma * rng.standard_normal(x.shape, dtype=np.float32)
    return electrons * (255.0 / full_well)


# --- the kinds --------------------------------------------------------------------------------------------


@corruption("gaussian_blur", levels=(1, 2, 3, 4.5, 6), unit="radius px")
def _gaussian_blur(image: Image.Image, radius: float, rng: np.random.Generator) -> Image.Image:
    """Out of focus: PIL Gaussian blur of this radius (the focus hunting on a fence or a glass pane)."""
    return image.filter(ImageFilter.GaussianBlur(radius))


@corruption("motion_blur", levels=(5, 9, 13, 19, 27), unit="streak length px")
def _motion_blur(image: Image.Image, length: float, rng: np.random.Generator) -> Image.Image:
    """Camera shake or a moving monkey: the mean of copies shifted along a streak at a random angle."""
    x = _to_float(image)
    angle = rng.uniform(0.0, math.pi)
    steps = max(2, math.ceil(length))
    offsets = np.linspace(-length / 2, length / 2, steps)
    dx = np.rint(offsets * math.cos(angle)).astype(int)
    dy = np.rint(offsets * math.sin(angle)).astype(int)
    pad = int(max(np.abs(dx).max(), np.abs(dy).max()))
    padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    h, w = x.shape[:2]
    out = np.zeros_like(x)
    for ox, oy in zip(dx, dy, strict=True):
        out += padded[pad + oy : pad + oy + h, pad + ox : pad + ox + w]
    return _to_image(out / steps)


@corruption("jpeg", levels=(30, 20, 10, 7, 5), unit="JPEG quality")
def _jpeg(image: Image.Image, quality: float, rng: np.random.Generator) -> Image.Image:
    """Heavy JPEG compression (messaging apps, cheap phones): 8x8 blocks and lost detail."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=round(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


@corruption("gaussian_noise", levels=(8, 15, 25, 35, 50), unit="sigma (0-255)")
def _gaussian_noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    """Independent Gaussian noise of this standard deviation on every channel value."""
    x = _to_float(image)
    return _to_image(x + sigma * rng.standard_normal(x.shape, dtype=np.float32))


@corruption("sensor_noise", levels=(800, 300, 120, 60, 30), unit="electrons at white")
def _sensor_noise(image: Image.Image, full_well: float, rng: np.random.Generator) -> Image.Image:
    """A small sensor's noise: shot noise (brighter = noisier, fewer electrons = worse) + read noise."""
    return _to_image(_shot_read_noise(_to_float(image), full_well, read_sigma=2.0, rng=rng))


@corruption("dark", levels=(0.7, 0.5, 0.3, 0.2, 0.12), unit="brightness factor")
def _dark(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    """Every value scaled by this factor: a plain darkening, no noise."""
    return _to_image(_to_float(image) * factor)


@corruption("low_light", levels=(0.7, 0.5, 0.3, 0.2, 0.12), unit="brightness factor")
def _low_light(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    """Shade as a phone sees it: light scaled by the factor, fewer photons collected, so noise shows.

    A phone at normal light collects ~1000 electrons at white; in shade proportionally fewer, with
    3 electrons of read noise, and its brightness is not pushed back up (an under-exposed shot).
    """
    x = _to_float(image)
    full_well = 1000.0 * factor
    return _to_image(_shot_read_noise(x, full_well, read_sigma=3.0, rng=rng) * factor)


@corruption("overexposure", levels=(1.4, 1.8, 2.3, 3.0, 4.0), unit="exposure gain")
def _overexposure(image: Image.Image, gain: float, rng: np.random.Generator) -> Image.Image:
    """Too much light (sun on the glass, bad metering): values multiplied by the gain, highlights clipped."""
    return _to_image(_to_float(image) * gain)


@corruption("low_resolution", levels=(160, 112, 64, 48, 32), unit="short side px")
def _low_resolution(image: Image.Image, short_side: float, rng: np.random.Generator) -> Image.Image:
    """A distant monkey cropped from the frame: downscaled to this short side, then upscaled back (bilinear).

    Photos already at or below that short side are returned unchanged.
    """
    w, h = image.size
    scale = short_side / min(w, h)
    if scale >= 1.0:
        return image.copy()
    small = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
    return small.resize((w, h), Image.Resampling.BILINEAR)


def _stripes(shape: tuple[int, int], period: float, width: float, angle: float, phase: float) -> np.ndarray:
    """Boolean mask of parallel stripes `width` px wide every `period` px, perpendicular to `angle`."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    u = xx * math.cos(angle) + yy * math.sin(angle) + phase
    return np.mod(u, period) < width


def _paint(image: Image.Image, mask: np.ndarray, rng: np.random.Generator) -> Image.Image:
    x = _to_float(image)
    colour = rng.uniform(25, 90) + rng.uniform(-10, 10, 3)  # dark metal, slightly tinted
    x[mask] = colour.astype(np.float32)
    return _to_image(x)


@corruption("bars", levels=(0.1, 0.18, 0.26, 0.35, 0.45), unit="fraction covered")
def _bars(image: Image.Image, coverage: float, rng: np.random.Generator) -> Image.Image:
    """Enclosure bars in front of the lens: near-vertical dark bars covering this fraction of the photo."""
    h, w = image.size[1], image.size[0]
    period = min(w, h) / rng.uniform(4.0, 7.0)
    angle = rng.uniform(-0.15, 0.15)  # radians from vertical bars
    mask = _stripes((h, w), period, coverage * period, angle, rng.uniform(0, period))
    return _paint(image, mask, rng)


@corruption("wire_mesh", levels=(0.1, 0.18, 0.26, 0.35, 0.45), unit="fraction covered")
def _wire_mesh(image: Image.Image, coverage: float, rng: np.random.Generator) -> Image.Image:
    """A chain-link fence: two crossing sets of thin wires covering this fraction of the photo.

    Two independent stripe sets of relative width r cover 1 - (1 - r)², so r = 1 - sqrt(1 - coverage).
    """
    h, w = image.size[1], image.size[0]
    period = min(w, h) / rng.uniform(7.0, 12.0)
    width = (1.0 - math.sqrt(1.0 - coverage)) * period
    angle = math.pi / 4 + rng.uniform(-0.2, 0.2)
    first = _stripes((h, w), period, width, angle, rng.uniform(0, period))
    second = _stripes((h, w), period, width, angle + math.pi / 2, rng.uniform(0, period))
    return _paint(image, first | second, rng)


@corruption("glare", levels=(0.15, 0.25, 0.35, 0.5, 0.65), unit="veil strength")
def _glare(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    """Reflection on the enclosure glass: a bright, smooth veil (a gradient at a random angle) blended in.

    The veil's weight is `strength` at its brightest edge and half that at the other, so contrast drops
    unevenly across the photo, as a reflection does.
    """
    x = _to_float(image)
    h, w = x.shape[:2]
    angle = rng.uniform(0.0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xx / max(w - 1, 1) - 0.5) * math.cos(angle) + (yy / max(h - 1, 1) - 0.5) * math.sin(angle)
    ramp = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)  # 0 .. 1 across the photo
    alpha = (strength * (0.5 + 0.5 * ramp))[..., None]
    veil = rng.uniform(200, 250) + rng.uniform(-5, 5, 3).astype(np.float32)  # whitish, slightly tinted
    return _to_image(x * (1 - alpha) + veil * alpha)


@corruption("contrast", levels=(0.6, 0.45, 0.3, 0.2, 0.12), unit="contrast factor")
def _contrast(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    """Flat, hazy light: every value pulled towards the photo's mean so its spread shrinks by the factor."""
    x = _to_float(image)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return _to_image(mean + (x - mean) * factor)
