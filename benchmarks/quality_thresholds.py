"""Where should the photo-quality thresholds sit? Measured on clean monkey photos and corrupted copies.

For every measure of `monkeysee.data.quality` this prints its distribution on the clean photos and on
each corruption at the strengths where the classifier stops being trustworthy (the reference degradations,
severity 3, and stronger), the threshold `quality.py` uses, the clean-photo quantile that would flag
0.3% of clean photos (the suggestion the constants were rounded from), and finally, per corruption, the
share of photos the whole verdict flags. Not a test: it reads the real data and takes a minute or two.

    PYTHONPATH=src python benchmarks/quality_thresholds.py [--data DIR] [--every N]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
from PIL import Image

from monkeysee.data import quality
from monkeysee.data.corrupt import CORRUPTIONS
from monkeysee.data.images import iter_photos, load_rgb

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "monkeys" / "training"
CLEAN_BUDGET = 0.003  # suggested thresholds flag this share of clean photos, per measure

# measure -> (direction a problem goes, the module constant that bounds it, the problem it signals)
BOUNDS = {
    "sharpness": ("low", "MIN_SHARPNESS", "blurred"),
    "noise": ("high", "MAX_NOISE", "noisy"),
    "blockiness": ("high", "MAX_BLOCKINESS", "compressed"),
    "highlights": ("low", "MIN_HIGHLIGHTS", "too dark"),
    "clipped": ("high", "MAX_CLIPPED", "overexposed"),
    "contrast": ("low", "MIN_CONTRAST", "low contrast"),
}
# corruption -> (severities measured, the problem a good verdict names)
DEGRADED = {
    "gaussian_blur": ((3, 4, 5), "blurred"),
    "motion_blur": ((3, 4, 5), "blurred"),
    "low_resolution": ((3, 4, 5), "blurred"),
    "jpeg": ((3, 4, 5), "compressed"),
    "gaussian_noise": ((3, 4, 5), "noisy"),
    "sensor_noise": ((3, 4, 5), "noisy"),
    "dark": ((3, 4, 5), "too dark"),
    "low_light": ((3, 4, 5), "too dark"),
    "overexposure": ((3, 4, 5), "overexposed"),
    "contrast": ((3, 4, 5), "low contrast"),
    "glare": ((3, 4, 5), "low contrast"),
}


def _measures(photos: list[Image.Image], kind: str | None, severity: int) -> list[quality.Measures]:
    rng = np.random.default_rng(severity)
    out = []
    for im in photos:
        shown = im if kind is None else CORRUPTIONS[kind](im, severity, rng)
        out.append(quality.measure(shown))
    return out


def _column(ms: list[quality.Measures], name: str) -> np.ndarray:
    return np.array([getattr(m, name) for m in ms], dtype=np.float64)


def _flag(values: np.ndarray, direction: str, threshold: float) -> np.ndarray:
    return values < threshold if direction == "low" else values > threshold


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA, help="species folders of clean photos")
    parser.add_argument("--every", type=int, default=1, help="use every N-th photo (quicker, rougher)")
    args = parser.parse_args()
    paths = list(iter_photos(args.data))[:: args.every]
    photos = [load_rgb(p) for p in paths]
    print(f"{len(photos)} clean photos from {args.data}")

    start = time.perf_counter()
    sets = {"clean": _measures(photos, None, 0)}
    per_photo_ms = (time.perf_counter() - start) / len(photos) * 1000
    for kind, (severities, _) in DEGRADED.items():
        for s in severities:
            sets[f"{kind} s{s}"] = _measures(photos, kind, s)

    for name in (f.name for f in fields(quality.Measures) if f.name in BOUNDS):
        direction, constant, problem = BOUNDS[name]
        clean = _column(sets["clean"], name)
        threshold = getattr(quality, constant)
        q = CLEAN_BUDGET if direction == "low" else 1 - CLEAN_BUDGET
        print(f"\n== {name} ({'lower' if direction == 'low' else 'higher'} = worse; flags '{problem}')")
        print(f"clean: p0.3 {np.quantile(clean, 0.003):.4g}  p5 {np.quantile(clean, 0.05):.4g}  "
              f"median {np.median(clean):.4g}  p95 {np.quantile(clean, 0.95):.4g}  "
              f"p99.7 {np.quantile(clean, 0.997):.4g}")
        print(f"suggested threshold (flags {CLEAN_BUDGET:.1%} of clean): {np.quantile(clean, q):.4g}; "
              f"used: {constant} = {threshold:g}, "
              f"flags {_flag(clean, direction, threshold).mean():.1%} of clean")
        for set_name, ms in sets.items():
            if set_name == "clean":
                continue
            v = _column(ms, name)
            flagged = _flag(v, direction, threshold).mean()
            print(f"  {set_name:<18} median {np.median(v):>9.4g}   flagged {flagged:6.1%}")

    print("\n== whole verdict (any problem) and the intended problem, per set")
    verdicts = {k: [quality.verdict(m) for m in ms] for k, ms in sets.items()}
    clean_v = verdicts["clean"]
    print(f"  {'clean':<18} flagged {np.mean([not v.ok for v in clean_v]):6.1%}")
    for p in quality.PROBLEMS:
        rate = np.mean([p in v.problems for v in clean_v])
        if rate:
            print(f"      clean '{p}': {rate:.1%}")
    for kind, (severities, problem) in DEGRADED.items():
        for s in severities:
            vs = verdicts[f"{kind} s{s}"]
            anyp = np.mean([not v.ok for v in vs])
            named = np.mean([problem in v.problems for v in vs])
            print(f"  {kind + ' s' + str(s):<18} flagged {anyp:6.1%}   as '{problem}' {named:6.1%}   "
                  f"({CORRUPTIONS[kind].unit} {CORRUPTIONS[kind].parameter(s):g})")
    print(f"\nassess() cost: {per_photo_ms:.2f} ms per photo (measures only, {photos[0].size} px photos)")


if __name__ == "__main__":
    main()
