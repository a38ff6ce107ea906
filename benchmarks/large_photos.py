"""Peak memory of `monkeysee predict --csv` on a folder of large phone photos, beside normal-size ones.

Writes --photos JPEGs of --megapixels each (real monkey photos upscaled when ../shared/data is present,
else synthetic ones) and the same number of normal-size photos (500x375) into a temporary folder, then
runs `python -m monkeysee predict RUN FOLDER --csv out.csv` in a subprocess on each folder and prints
the peak resident memory of each run (the child's own `ru_maxrss`, from `os.wait4`) and their ratio.
The target: large photos at most 1.5 GB at the default batch size.

With --compare, also predicts every photo in-process twice, decoded at full size and at the size the
model needs (`load_rgb(..., preprocess=...)`), and prints the largest difference in any species
probability: 0 for the normal photos (nothing is reduced), small for the large ones (JPEG draft).

    python benchmarks/large_photos.py --run runs/lite0     # a trained run
    python benchmarks/large_photos.py                       # builds a random efficientnet_lite0 run
    PYTHONPATH=/path/to/other/src python benchmarks/large_photos.py    # another checkout's code

The subprocess inherits the environment, so PYTHONPATH picks the code that is measured.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_latency import SHARED_PHOTOS, build_run

TARGET_BYTES = 1.5e9
NORMAL_SIZE = (500, 375)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def sources(n: int, folder: Path) -> list[Image.Image]:
    """`n` photos to scale up: real ones from `folder` when present (spread over it, cycled if too few),
    else seeded synthetic textures."""
    found = sorted(folder.rglob("*.jpg")) if folder.is_dir() else []
    real = found[:: max(1, len(found) // n)][:n]
    if real:
        return [Image.open(real[i % len(real)]).convert("RGB") for i in range(n)]
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(n)]


def write_photos(folder: Path, photos: list[Image.Image], size: tuple[int, int]) -> int:
    """Each photo resized to `size` (a 4:3 landscape frame) and saved as a quality-90 JPEG; total bytes."""
    folder.mkdir(parents=True)
    total = 0
    for i, photo in enumerate(photos):
        path = folder / f"photo_{i:03d}.jpg"
        photo.resize(size, Image.Resampling.BILINEAR).save(path, "JPEG", quality=90)
        total += path.stat().st_size
    return total


def peak_rss(run: Path, folder: Path, out: Path, batch_size: int | None) -> tuple[int, float, int]:
    """(peak RSS in bytes, seconds, exit status) of one `monkeysee predict --csv` subprocess."""
    cmd = [sys.executable, "-m", "monkeysee", "predict", str(run), str(folder), "--csv", str(out)]
    if batch_size is not None:
        cmd += ["--batch-size", str(batch_size)]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait for it again
    return usage.ru_maxrss * 1024, time.perf_counter() - start, child.returncode


def rows(csv: Path) -> int:
    return max(0, len(csv.read_text(encoding="utf-8").splitlines()) - 1) if csv.exists() else 0


def compare(run: Path, folder: Path) -> np.ndarray:
    """Per photo, the largest absolute difference in any calibrated species probability between
    full-size decoding and decoding at the size the model needs."""
    from monkeysee.data.images import load_rgb
    from monkeysee.predict import Predictor

    predictor = Predictor.from_run_dir(run, precision="fp32", assess_quality=False)
    pre = predictor.run.manifest.preprocess
    diffs = []
    for path in sorted(folder.glob("*.jpg")):
        full, sized = load_rgb(path), load_rgb(path, preprocess=pre)
        logits, _ = predictor.logits_and_features(predictor.prepare([full, sized]))
        probs = predictor.probabilities(logits.numpy())
        diffs.append(np.abs(probs[0] - probs[1]).max())
    return np.array(diffs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=None, help="run folder (default: build a random lite0 run)")
    p.add_argument("--photos", type=int, default=100)
    p.add_argument("--megapixels", type=float, default=12.0)
    p.add_argument("--batch-size", type=int, default=None, help="predict's --batch-size (default: its own)")
    p.add_argument("--source", type=Path, default=SHARED_PHOTOS, help="folder of photos to scale up")
    p.add_argument("--compare", action="store_true", help="also compare probabilities (see above)")
    args = p.parse_args()

    width = round((args.megapixels * 1e6 * 4 / 3) ** 0.5)
    large = (width, round(width * 3 / 4))
    with tempfile.TemporaryDirectory(prefix="large_photos_") as tmp:
        root = Path(tmp)
        run = args.run or build_run(root / "run")
        import monkeysee

        say(f"code: {Path(monkeysee.__file__).parent}; run: {run}")
        photos = sources(args.photos, args.source)
        t0 = time.perf_counter()
        big_bytes = write_photos(root / "large", photos, large)
        small_bytes = write_photos(root / "normal", photos, NORMAL_SIZE)
        say(f"wrote {args.photos} photos of {large[0]}x{large[1]} ({big_bytes / 1e6:,.0f} MB) and of "
            f"{NORMAL_SIZE[0]}x{NORMAL_SIZE[1]} ({small_bytes / 1e6:,.1f} MB) "
            f"in {time.perf_counter() - t0:.0f} s")
        results = {}
        for name in ("normal", "large"):
            out = root / f"{name}.csv"
            results[name] = (*peak_rss(run, root / name, out, args.batch_size), rows(out))
        batch = args.batch_size or "default"
        print(f"monkeysee predict --csv, {args.photos} photos, batch size {batch}:")
        for name, size in (("normal", NORMAL_SIZE), ("large", large)):
            rss, seconds, code, n = results[name]
            print(f"  {name:6} {size[0]}x{size[1]}: peak RSS {rss / 1e9:5.2f} GB, {seconds:5.1f} s, "
                  f"{n} rows, exit {code}")
        ratio = results["large"][0] / results["normal"][0]
        verdict = "within" if results["large"][0] <= TARGET_BYTES else "OVER"
        print(f"  large / normal peak: {ratio:.2f}x; {verdict} the {TARGET_BYTES / 1e9:.1f} GB target")
        if args.compare:
            print("species probability, full-size decoding vs decoding at the size the model needs:")
            for name, size in (("normal", NORMAL_SIZE), ("large", large)):
                d = compare(run, root / name)
                print(f"  {name:6} {size[0]}x{size[1]}: per photo max |difference|: largest {d.max():.2e}, "
                      f"95th percentile {np.percentile(d, 95):.2e}, median {np.median(d):.2e}")


if __name__ == "__main__":
    main()
