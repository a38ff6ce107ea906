"""Answers a keeper can trust: every figure of the trust acceptance list, for this tree beside a baseline
commit, measured in one run on the same splits.

    python benchmarks/trust.py [--baseline REF] [--out runs/trust] [--data-root ../shared/data]
                               [--skip-butterflies]

Each tree (this checkout's `src/`, and `git archive REF src` of the baseline, default `main`) trains in
its own subprocess, with its own code on `PYTHONPATH`, into `OUT/<tree>/`, sharing one feature store, so
the second tree encodes only what its recipe changed:

- monkeys, default `train` (seed 0): the held-out test split clean and under the five reference
  corruptions (blur, JPEG, noise, dark, tiny): answered share, right at the returned rank, wrong answers;
- the same run on the held-out half of `other-primates/` (every second file, sorted by name; the other
  half is the one to tune on) and on `not-monkeys/`: rejected ("not one of my species" or "take another
  photo") and given a monkey taxon;
- butterflies, default `train --taxonomy`: wrong answers, answered at species rank, right when answered;
- butterflies trained without ten species of four large families: how often their photos get a species,
  and how often their right family or "not one of my species".

A "wrong answer" is a species that is not the photo's or a genus/family that does not hold it. A tree
whose predictions carry no `rank` (before the answer ladder) answers at species rank whenever its verdict
is "species". Never tune on what this prints: the test splits and the held-out primates are for reporting.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

UNSEEN = ("MONARCH", "PAINTED LADY", "RED ADMIRAL", "MOURNING CLOAK",  # Nymphalidae
          "PIPEVINE SWALLOW", "ULYSES",  # Papilionidae
          "ADONIS", "GREEN HAIRSTREAK",  # Lycaenidae
          "CABBAGE WHITE", "CLOUDED SULPHUR")  # Pieridae
ROOT = Path(__file__).resolve().parent.parent


# --- the parent: one subprocess per tree, then one table ------------------------------------------------

def baseline_src(ref: str, out: Path) -> Path:
    """`src/` of commit `ref`, unpacked once under `out`."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", ref], check=True, capture_output=True,
                            text=True).stdout.strip()
    dest = out / f"src-{commit[:10]}"
    if not (dest / "src").is_dir():
        blob = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src"], check=True,
                              capture_output=True).stdout
        with tarfile.open(fileobj=BytesIO(blob)) as tar:
            tar.extractall(dest, filter="data")
    return dest / "src"


def run_tree(name: str, src: Path, args: argparse.Namespace, reuse: bool = False) -> dict[str, Any]:
    out = args.out / name
    out.mkdir(parents=True, exist_ok=True)
    result = out / "figures.json"
    if reuse and result.is_file():
        return dict(json.loads(result.read_text()))
    cmd = [sys.executable, __file__, "--measure", "--out", str(out), "--store", str(args.store),
           "--data-root", str(args.data_root)] + (["--skip-butterflies"] if args.skip_butterflies else [])
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    figures = json.loads(result.read_text())
    figures["seconds"] = time.perf_counter() - t0
    return figures


def print_table(trees: dict[str, dict[str, Any]]) -> None:
    names = list(trees)
    keys = [k for k in trees[names[-1]] if isinstance(trees[names[-1]][k], float | int)]
    print(f"\n{'figure':<58}" + "".join(f"{n:>18}" for n in names))
    for key in keys:
        cells = "".join(f"{_cell(key, trees[n].get(key)):>18}" for n in names)
        print(f"{key:<58}{cells}")


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if key in ("seconds",) or key.endswith(" n") else f"{value:.2%}"


# --- the child: train with this tree's code and measure -------------------------------------------------

def train(data: Path, out: Path, store: Path, *extra: str) -> Path:
    from monkeysee.rundir import RunDir

    if not RunDir(out).is_finished():
        subprocess.run([sys.executable, "-m", "monkeysee", "train", "--data", str(data), "--out", str(out),
                        "--store", str(store), "--no-evaluate", *extra], check=True)
    return out


class Answers:
    """Rank, taxon and verdict of each photo from a run's predictor, in the tree's own words."""

    def __init__(self, run: Path) -> None:
        from monkeysee.data.taxonomy import Taxonomy
        from monkeysee.predict import Predictor

        self.predictor = Predictor.from_run_dir(run)
        manifest = json.loads((run / "manifest.json").read_text())
        self.taxonomy = Taxonomy.from_dict(manifest["taxonomy"]) if manifest.get("taxonomy") else None

    def of(self, images: list[Any]) -> list[dict[str, Any]]:
        out = []
        for start in range(0, len(images), 32):
            out += [p.to_dict() for p in self.predictor.predict_images(images[start:start + 32], top_k=3)]
        for d in out:
            if "rank" not in d:
                d["rank"] = "species" if d["verdict"] == "species" else None
                d["taxon"] = d["label"] if d["rank"] else None
        return out

    def right(self, d: dict[str, Any], label: str) -> bool:
        """Whether an answered photo's taxon holds species `label`."""
        if d["rank"] == "species":
            return bool(d["label"] == label)
        assert self.taxonomy is not None, "an answer above species rank needs a taxonomy"
        return self.taxonomy.taxon(label, d["rank"]) == d["taxon"]


def known_figures(answers: Answers, images: list[Any], labels: list[str], prefix: str) -> dict[str, float]:
    ds = answers.of(images)
    answered = [d for d in ds if d.get("rank")]
    right = sum(answers.right(d, y) for d, y in zip(ds, labels, strict=True) if d.get("rank"))
    at_species = sum(d["rank"] == "species" for d in ds)
    return {f"{prefix} n": len(ds), f"{prefix} answered": len(answered) / len(ds),
            f"{prefix} answered at species": at_species / len(ds),
            f"{prefix} right when answered": right / max(1, len(answered)),
            f"{prefix} wrong answers": (len(answered) - right) / len(ds),
            f"{prefix} not one of my species": float(np.mean([d["verdict"] == "unknown" for d in ds])),
            f"{prefix} take another photo": float(np.mean([d["verdict"] == "retake" for d in ds]))}


def rejected_figures(answers: Answers, images: list[Any], prefix: str) -> dict[str, float]:
    ds = answers.of(images)
    return {f"{prefix} n": len(ds),
            f"{prefix} rejected": float(np.mean([d["verdict"] in ("unknown", "retake") for d in ds])),
            f"{prefix} not one of my species": float(np.mean([d["verdict"] == "unknown" for d in ds])),
            f"{prefix} given a taxon": float(np.mean([bool(d.get("rank")) for d in ds]))}


def upsampled(path: Path, short_side: int = 256) -> Any:
    """A 64-px photo scaled up (Lanczos) so that it is judged as a photo, not refused as too small."""
    from PIL import Image

    from monkeysee.data.images import load_rgb

    im = load_rgb(path)
    scale = short_side / min(im.size)
    return im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)


def measure_monkeys(root: Path, out: Path, store: Path) -> dict[str, float]:
    from monkeysee.data.corrupt import CORRUPTIONS, REFERENCE_POINTS
    from monkeysee.data.folders import iter_photos
    from monkeysee.data.images import load_rgb
    from monkeysee.rundir import RunDir

    run = train(root / "monkeys", out / "monkeys", store / "monkeys")
    answers = Answers(run)
    index = RunDir(run).read_splits()
    photos = [load_rgb(s.path) for s in index.test]
    labels = [index.species[s.target].label for s in index.test]
    figures = known_figures(answers, photos, labels, "monkeys clean")
    rng = np.random.default_rng(0)
    for point in REFERENCE_POINTS:
        bad = [CORRUPTIONS.get(point.kind)(im, point.severity, rng) for im in photos]
        figures |= known_figures(answers, bad, labels, f"monkeys {point.label}")
    primates = sorted(p for d in sorted((root / "other-primates").iterdir()) for p in iter_photos(d))
    figures |= rejected_figures(answers, [upsampled(p) for p in primates[1::2]],
                                "other primates (held-out half, 64 px upsampled)")
    figures |= rejected_figures(answers, [load_rgb(p) for p in iter_photos(root / "not-monkeys")],
                                "other animals")
    return figures


def taxa_of(csv_path: Path) -> dict[str, dict[str, str]]:
    """Each species' taxon at every rank of the CSV (the run's own taxonomy lacks the left-out species)."""
    with csv_path.open(newline="") as f:
        return {row["species"]: row for row in csv.DictReader(f)}


def measure_butterflies(root: Path, out: Path, store: Path) -> dict[str, float]:
    from monkeysee.data.folders import iter_photos
    from monkeysee.data.images import load_rgb
    from monkeysee.rundir import RunDir

    table = root / "butterflies-taxonomy.csv"
    store = store / "butterflies"
    run = train(root / "butterflies", out / "butterflies", store, "--taxonomy", str(table))
    answers = Answers(run)
    index = RunDir(run).read_splits()
    figures = known_figures(answers, [load_rgb(s.path) for s in index.test],
                            [index.species[s.target].label for s in index.test], "butterflies")
    seen = out / "butterflies-90"
    seen.mkdir(exist_ok=True)
    for folder in sorted((root / "butterflies").iterdir()):
        if folder.name not in UNSEEN and not (seen / folder.name).exists():
            (seen / folder.name).symlink_to(folder.resolve())
    answers = Answers(train(seen, out / "butterflies-90-run", store, "--taxonomy", str(table)))
    taxa = taxa_of(table)
    given = held = coarse = wrong = total = 0
    for name in UNSEEN:
        ds = answers.of([load_rgb(p) for p in iter_photos(root / "butterflies" / name)])
        total += len(ds)
        given += sum(d["rank"] == "species" for d in ds)
        family = taxa[name]["family"]
        held += sum(d["verdict"] == "unknown" or (d["rank"] == "family" and d["taxon"] == family) for d in ds)
        above = [d for d in ds if d["rank"] not in (None, "species")]
        coarse += sum(d["rank"] != "family" and d["taxon"] == taxa[name][d["rank"]] for d in above)
        wrong += sum(d["taxon"] != taxa[name][d["rank"]] for d in above)
    return figures | {"unseen species n": total, "unseen species given a species": given / total,
                      "unseen species: right family or not mine": held / total,
                      "unseen species: a right taxon above family": coarse / total,
                      "unseen species: a wrong genus, family or above": wrong / total}


def measure(args: argparse.Namespace) -> None:
    figures = measure_monkeys(args.data_root, args.out, args.store)
    if not args.skip_butterflies:
        figures |= measure_butterflies(args.data_root, args.out, args.store)
    (args.out / "figures.json").write_text(json.dumps(figures, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="main", help="commit or branch to measure beside this tree")
    ap.add_argument("--out", type=Path, default=Path("runs/trust"))
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    ap.add_argument("--skip-butterflies", action="store_true", help="monkeys and primates only (minutes)")
    ap.add_argument("--reuse-baseline", action="store_true",
                    help="take the baseline's figures from an earlier run into the same OUT")
    ap.add_argument("--baseline-only", action="store_true", help="measure the baseline alone")
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path,
                    help="feature stores both trees share: DIR/monkeys, DIR/butterflies (default OUT/store)")
    args = ap.parse_args()
    args.out, args.data_root = args.out.resolve(), args.data_root.resolve()
    args.store = (args.store or args.out / "store").resolve()
    if args.measure:
        return measure(args)
    trees = {f"baseline {args.baseline}": run_tree("baseline", baseline_src(args.baseline, args.out), args,
                                                   reuse=args.reuse_baseline)}
    if not args.baseline_only:
        trees["this tree"] = run_tree("this", ROOT / "src", args)
    print_table(trees)


if __name__ == "__main__":
    main()
