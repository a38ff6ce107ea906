"""How fast is monkeysee's CAM engine next to pytorch-grad-cam (grad-cam 1.5.7), on the same inputs?

    /work/venv/bin/python benchmarks/cam_speed.py [--quick] [--rounds N] [--repeats N]

For EfficientNet-Lite0 (its bundled ImageNet weights) and VGG16 (random weights: its ImageNet weights
need a download), a batch of 16 photos at 224x224, explained at the registry's default layer:

1. Grad-CAM throughput (photos/s).
2. All five gradient methods: monkeysee in one call (one forward + one gradient pass) against
   pytorch-grad-cam running GradCAM, GradCAM++, XGradCAM, HiResCAM and LayerCAM one after another.
3. Score-CAM time per photo and peak memory, on fewer photos (one by default: it runs the model once per
   channel, minutes per photo on VGG16), each variant in a fresh process (torch allocates outside
   tracemalloc's view, so the peak is the process's max RSS; "extra" is the peak above the RSS after
   loading the model and inputs).

Each side runs as a user of it would. monkeysee: at its default precision ("auto": bf16 autocast where
the CPU has native bf16, as `monkeysee explain` does) and, for transparency, at fp32, in processes that
tune glibc malloc as the `monkeysee` entry point does (`monkeysee.runtime.tune_malloc`). pytorch-grad-cam:
fp32 with its defaults, in its own processes with glibc's default malloc. Targets are judged on
monkeysee's default. Every measurement runs in worker subprocesses; the sides alternate, `--rounds`
times, each timing `--repeats` calls after one warm-up call, and the median over all timed calls is
reported. The maps of the last call are compared: monkeysee fp32 vs the reference (exactness) and
monkeysee bf16 vs fp32 (what bf16 costs in fidelity, min-max scaled maps at 224x224).

Both sides get the very same tensor, as `eval_transform` makes it (NCHW). monkeysee switches it to
channels-last internally (oneDNN's faster layout on CPU); so that this does not pass for CAM engineering,
one more row gives the reference the channels-last tensor too. Photos come from ../shared/data when it is
there, else seeded noise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from monkeysee.explain import explain
from monkeysee.models import create_model, get_backbone
from monkeysee.runtime import resolve_precision, tune_malloc

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "monkeys" / "training"
BACKBONES = ("efficientnet_lite0", "vgg16")
GRADIENT_METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")
TASKS = {"gradcam": ("gradcam",), "all5": GRADIENT_METHODS, "scorecam": ("scorecam",)}
CHUNK = 32  # perturbed copies per pass, both sides
# Grad-CAM++ in pytorch-grad-cam adds 1e-6 to alpha's denominator, where we add none (see
# tests/explain/test_explain_reference.py); with a real model's small gradients that shows in the maps.
EPSILON_METHODS = ("gradcam++",)
TARGETS = {"Grad-CAM photos/s": 5.0, "Score-CAM s/photo": 2.0}


def load_model(name: str) -> torch.nn.Module:
    """Lite0 with its bundled ImageNet weights; other backbones with seeded random weights."""
    torch.manual_seed(0)
    return create_model(name, pretrained=name == "efficientnet_lite0").eval()


def load_photos(name: str, n: int, size: int) -> tuple[torch.Tensor, str]:
    """n photos spread over the species folders, preprocessed for `name`; seeded noise without data."""
    if DATA.is_dir():
        from dataclasses import replace

        from monkeysee.data.images import load_rgb
        from monkeysee.data.transforms import eval_transform
        from monkeysee.explain.photos import spread

        pre = replace(get_backbone(name).preprocess, input_size=size)
        transform = eval_transform(pre)
        paths = spread(p for p in DATA.glob("n*/*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[:n]
        x = torch.stack([transform(load_rgb(p)) for p in paths])
        source = f"{n} photos from {DATA}"
    else:
        x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))
        source = f"{n} seeded noise images (no data at {DATA})"
    return x.contiguous(), source


def reference_class(method: str):
    import pytorch_grad_cam as cam

    return {
        "gradcam": cam.GradCAM,
        "gradcam++": cam.GradCAMPlusPlus,
        "xgradcam": cam.XGradCAM,
        "hirescam": cam.HiResCAM,
        "layercam": cam.LayerCAM,
        "scorecam": cam.ScoreCAM,
    }[method]


def run_reference(model, layer: str, x: torch.Tensor, methods: Sequence[str]) -> dict[str, np.ndarray]:
    """pytorch-grad-cam, one method after another, as its users call it (targets: the predictions)."""
    module = dict(model.named_modules())[layer]
    out = {}
    for method in methods:
        with reference_class(method)(model=model, target_layers=[module]) as ref:
            if method == "scorecam":
                ref.batch_size = CHUNK
            out[method] = ref(input_tensor=x, targets=None)
    return out


def run_ours(
    model, layer: str, x: torch.Tensor, methods: Sequence[str], precision: str
) -> dict[str, np.ndarray]:
    results = explain(model, x, layer, methods, chunk_size=CHUNK, precision=precision)
    return {k: v.upsampled for k, v in results.items()}


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def rss_mib() -> float:
    """Resident set size now (Linux /proc), in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """Samples the RSS every 2 ms in a thread: the highest value above the RSS at entry."""

    def __enter__(self) -> PeakRss:
        import threading

        self.start = self.peak = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_mib())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())


def live_channels(model, layer: str, x: torch.Tensor) -> float:
    """Share of the layer's channels whose map is not constant (Score-CAM skips the others)."""
    acts = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, i, o: acts.update(a=o))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    flat = acts["a"].flatten(2)
    return float((flat.amax(2) > flat.amin(2)).float().mean())


def worker(args: argparse.Namespace) -> None:
    """One side, one task, in this fresh process: prints timings (and Score-CAM memory) as JSON and saves
    the maps of its last call to `--maps`."""
    if args.worker == "ours":
        tune_malloc()  # as the `monkeysee` console entry point does
    model = load_model(args.backbone)
    layer = get_backbone(args.backbone).explain_layer
    x, _ = load_photos(args.backbone, args.photos, args.size)
    methods = TASKS[args.task]
    sides: dict[str, Callable[..., dict[str, np.ndarray]]]
    if args.worker == "ref":
        sides = {"ref": lambda ms=methods: run_reference(model, layer, x, ms)}
        if args.ref_channels_last:
            x_cl = x.contiguous(memory_format=torch.channels_last)
            sides["ref_cl"] = lambda ms=methods: run_reference(model, layer, x_cl, ms)
    else:
        sides = {
            p: (lambda ms=methods, p=p: run_ours(model, layer, x, ms, p)) for p in args.precisions.split(",")
        }
    record: dict[str, object] = {"seconds": {s: [] for s in sides}}
    maps: dict[str, np.ndarray] = {}
    if args.task == "scorecam":  # one side per process, one call: time and memory
        ((side, fn),) = sides.items()
        with torch.no_grad():
            model(x[:1])  # warm the kernels; counted in the baseline
        with PeakRss() as mem:
            seconds, out = timed(fn)
        record["seconds"][side].append(seconds)
        record |= {
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "extra_mib": mem.peak - mem.start,
        }
        if args.worker == "ours":
            record["live_channels"] = live_channels(model, layer, x)
        maps |= {f"{side}/{m}": a for m, a in out.items()}
    else:
        for fn in sides.values():
            # Warm-up (oneDNN primitives, allocator). The five gradient methods share Grad-CAM's passes,
            # so the reference warms up on Grad-CAM alone; ours is one call either way.
            fn(methods if args.worker == "ours" else ("gradcam",))
        for _ in range(args.repeats):  # alternate the variants within the process
            for side, fn in sides.items():
                seconds, out = timed(fn)
                record["seconds"][side].append(seconds)
                maps |= {f"{side}/{m}": a for m, a in out.items()}
    np.savez(args.maps, **maps)
    print(json.dumps(record))


def spawn(flags: list[str], maps: Path) -> tuple[dict, dict[str, np.ndarray]]:
    cmd = [sys.executable, __file__, *flags, "--maps", str(maps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {' '.join(flags)} failed:\n{proc.stderr[-3000:]}")
    with np.load(maps) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(proc.stdout.strip().splitlines()[-1]), arrays


def diffs(maps: dict[str, np.ndarray], side_a: str, side_b: str) -> dict[str, float]:
    """max |a - b| per method that both sides computed."""
    methods = [k.split("/", 1)[1] for k in maps if k.startswith(side_a + "/")]
    return {m: float(np.abs(maps[f"{side_a}/{m}"] - maps[f"{side_b}/{m}"]).max()) for m in methods}


def max_diff(maps: dict[str, np.ndarray], side_a: str, side_b: str) -> tuple[float, str]:
    """Largest |a - b| over the methods both sides computed, and the method where it is."""
    per_method = diffs(maps, side_a, side_b)
    worst = max(per_method, key=per_method.__getitem__)
    return per_method[worst], worst


def measure(
    backbone: str,
    task: str,
    photos: int,
    size: int,
    rounds: int,
    repeats: int,
    tmp: Path,
    ref_cl: bool = False,
) -> dict:
    """Median seconds per call of each variant (ours: auto, fp32; ref, and ref_cl with `ref_cl`), with the
    sides' worker processes alternating `rounds` times; and the max |diff| between their last maps."""
    base = ["--backbone", backbone, "--task", task, "--photos", str(photos), "--size", str(size)]
    base += ["--repeats", str(repeats)]
    seconds: dict[str, list[float]] = {}
    records: dict[str, dict] = {}
    maps: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        if task == "scorecam":  # a fresh process per variant, so that each peak RSS is its own
            ours = [["--precisions", "auto"], ["--precisions", "fp32"]]
        else:
            ours = [["--precisions", "auto,fp32"]]
        runs = [["--worker", "ours", *o] for o in ours]
        runs.append(["--worker", "ref"] + (["--ref-channels-last"] if ref_cl else []))
        for flags in runs:
            rec, arrays = spawn([*base, *flags], tmp / "maps.npz")
            maps |= arrays
            for side, values in rec["seconds"].items():
                seconds.setdefault(side, []).extend(values)
                records[side] = rec
    out: dict = {k: statistics.median(v) for k, v in seconds.items()}
    out |= {"n": len(seconds["ref"]), "records": records}
    out |= {"exact": max_diff(maps, "fp32", "ref"), "fidelity": max_diff(maps, "auto", "fp32")}
    out["diffs"] = diffs(maps, "fp32", "ref")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one round of one repeat; Score-CAM on Lite0 only")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=None, help="alternating worker rounds per side (default 2)")
    p.add_argument(
        "--repeats", type=int, default=None, help="timed calls per worker (default 3; vgg16 2: ~15 s a call)"
    )
    p.add_argument("--scorecam-photos", type=int, default=1, help="photos for the Score-CAM rows (default 1)")
    p.add_argument("--worker", choices=("ours", "ref"), help=argparse.SUPPRESS)
    p.add_argument("--backbone", default="efficientnet_lite0", help=argparse.SUPPRESS)
    p.add_argument("--task", choices=tuple(TASKS), default="gradcam", help=argparse.SUPPRESS)
    p.add_argument("--photos", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--precisions", default="auto,fp32", help=argparse.SUPPRESS)
    p.add_argument("--ref-channels-last", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--maps", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    from importlib.metadata import version

    auto = resolve_precision("auto")
    rounds = args.rounds or (1 if args.quick else 2)
    started = time.perf_counter()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"{args.size}x{args.size}; load average at the start {load} ({os.cpu_count()} CPUs)\n"
        f"monkeysee: its default precision (auto -> {auto} on this CPU) and fp32, glibc malloc tuned "
        "(monkeysee.runtime.tune_malloc) as the monkeysee CLI runs\n"
        f"pytorch-grad-cam {version('grad-cam')}: fp32 with its defaults, default glibc malloc, as a plain "
        "user runs it\n"
        f"each side in its own worker processes, alternating: {rounds} round(s) x "
        f"{args.repeats or (1 if args.quick else '3 (vgg16: 2)')} timed call(s) after one warm-up (5-method "
        "rows: 1 timed call per worker, one round for vgg16); the median is reported\n",
        flush=True,
    )
    rows = []
    notes = []

    def row(name: str, what: str, r: dict, note: str, ref: str = "ref", per_photo: bool = False) -> None:
        scale = (lambda s: s) if per_photo else (lambda s: args.batch / s)  # s/photo, or photos/s
        ratios = (r[ref] / r["auto"], r[ref] / r["fp32"])
        rows.append((name, what, scale(r["auto"]), scale(r["fp32"]), scale(r[ref]), *ratios, note))

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for name in BACKBONES:
            layer = get_backbone(name).explain_layer
            _, source = load_photos(name, args.batch, args.size)
            weights = "ImageNet weights" if name == "efficientnet_lite0" else "random weights"
            print(f"{name} ({weights}), layer {layer}, {source}", flush=True)
            lite = name == "efficientnet_lite0"
            repeats = args.repeats or (1 if args.quick else 3 if lite else 2)
            r = measure(name, "gradcam", args.batch, args.size, rounds, repeats, tmp, ref_cl=lite)
            row(
                name,
                "Grad-CAM photos/s",
                r,
                f"{r['n']} calls/side; fp32 vs ref max |diff| {r['exact'][0]:.1e}",
            )
            notes.append(
                f"{name}: max |bf16 - fp32| of our Grad-CAM maps, {args.batch} photos: {r['fidelity'][0]:.3f}"
            )
            if lite:  # the reference given channels-last input too, measured in the same worker calls
                row(name, "  same, ref. channels-last", r, "ours as above", ref="ref_cl")
            r5 = measure(name, "all5", args.batch, args.size, rounds if lite else 1, 1, tmp)
            others = max(v for m, v in r5["diffs"].items() if m not in EPSILON_METHODS)
            note = (
                f"{r5['n']} call/side; fp32 vs ref max |diff| {others:.1e}, gradcam++ "
                f"{r5['diffs']['gradcam++']:.1e} (the reference's epsilons)"
            )
            row(name, "5 gradient methods photos/s", r5, note)
            if args.quick and not lite:
                print("  Score-CAM skipped for vgg16 with --quick (minutes per photo per side)", flush=True)
                continue
            n = args.scorecam_photos
            print(f"  Score-CAM on {n} of the photos, one call per side, each in a fresh process", flush=True)
            sc = measure(name, "scorecam", n, args.size, 1, 1, tmp)
            ours, ref = sc["records"]["auto"], sc["records"]["ref"]
            note = (
                f"{n} photo(s); peak RSS {ours['peak_mib']:.0f} vs {ref['peak_mib']:.0f} MiB, "
                f"+{ours['extra_mib']:.0f} vs +{ref['extra_mib']:.0f} MiB while running; "
                f"{ours['live_channels']:.0%} of channels not constant"
            )
            notes.append(
                f"{name}: max |bf16 - fp32| of our Score-CAM maps, {n} photo(s): {sc['fidelity'][0]:.3f}"
            )
            row(
                name,
                "Score-CAM s/photo",
                {k: sc[k] / n for k in ("auto", "fp32", "ref")},
                note,
                per_photo=True,
            )
    print()
    head = (
        f"{'backbone':<19} {'measure':<28} {'ours ' + auto:>10} {'ours fp32':>10} {'grad-cam':>10} "
        f"{'speed-up':>9} {'(fp32)':>7}  notes"
    )
    print(head)
    print("-" * len(head))
    verdicts = []
    for name, what, ours, fp32, ref, ratio, ratio32, note in rows:
        numbers = f"{ours:>10.2f} {fp32:>10.2f} {ref:>10.2f} {ratio:>8.1f}x {ratio32:>6.1f}x"
        print(f"{name:<19} {what:<28} {numbers}  {note}")
        if what in TARGETS:
            met = "met" if ratio >= TARGETS[what] else "MISSED"
            verdicts.append(f"  {name} {what}: {ratio:.1f}x at {auto} (target >= {TARGETS[what]:g}x): {met}")
    print(
        f"\nspeed-up = grad-cam time / ours ({auto}, and fp32 in brackets); Score-CAM rows are seconds per "
        "photo (lower is better), the others photos per second"
    )
    print(
        "\n".join(
            [
                f"fidelity of bf16 (maps min-max scaled to [0, 1], {args.size}x{args.size}):",
                *(f"  {n}" for n in notes),
            ]
        )
    )
    print("\n".join(["targets, judged on our default precision:", *verdicts]))
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"total {time.perf_counter() - started:.0f} s; load average at the end {load} ({os.cpu_count()} CPUs)"
    )


if __name__ == "__main__":
    main()
