"""How fast is monkeysee's CAM engine next to pytorch-grad-cam (grad-cam 1.5.7), on the same inputs?

    /work/venv/bin/python benchmarks/cam_speed.py [--quick]

For EfficientNet-Lite0 (its bundled ImageNet weights) and VGG16 (random weights: its ImageNet weights
need a download), a batch of 16 photos at 224x224, explained at the registry's default layer:

1. Grad-CAM throughput (photos/s).
2. All five gradient methods: monkeysee in one call (one forward + one gradient pass) against
   pytorch-grad-cam running GradCAM, GradCAM++, XGradCAM, HiResCAM and LayerCAM one after another.
3. Score-CAM time per photo and peak memory, each measured in a fresh subprocess (torch allocates outside
   tracemalloc's view, so the peak is the process's max RSS; "extra" is the peak above the RSS after
   loading the model and inputs).

Both sides get the very same tensor, as `eval_transform` makes it (NCHW). monkeysee switches it to
channels-last internally (oneDNN's faster layout on CPU); so that this does not pass for CAM engineering,
one more row gives the reference the channels-last tensor too. Timings alternate between the two sides
and report the median. Photos come from ../shared/data when it is there, else seeded noise.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from monkeysee.explain import explain
from monkeysee.models import create_model, get_backbone
from monkeysee.runtime import tune_malloc

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "monkeys" / "training"
BACKBONES = ("efficientnet_lite0", "vgg16")
GRADIENT_METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")


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


def run_reference(model, layer: str, x: torch.Tensor, methods) -> dict[str, np.ndarray]:
    """pytorch-grad-cam, one method after another, as its users call it (targets: the predictions)."""
    module = dict(model.named_modules())[layer]
    out = {}
    for method in methods:
        with reference_class(method)(model=model, target_layers=[module]) as ref:
            if method == "scorecam":
                ref.batch_size = 32  # the same chunk size as ours
            out[method] = ref(input_tensor=x, targets=None)
    return out


def run_ours(model, layer: str, x: torch.Tensor, methods) -> dict[str, np.ndarray]:
    return {k: v.upsampled for k, v in explain(model, x, layer, methods, chunk_size=32).items()}


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def compare(model, layer, x, methods, repeats: int, ref_x: torch.Tensor | None = None) -> dict:
    """Median seconds of ours and the reference, alternating; one warm-up call each first."""
    ref_x = x if ref_x is None else ref_x
    run_ours(model, layer, x, methods)
    run_reference(model, layer, ref_x, methods)
    ours_t, ref_t = [], []
    for _ in range(repeats):
        t, ours = timed(lambda: run_ours(model, layer, x, methods))
        ours_t.append(t)
        t, ref = timed(lambda: run_reference(model, layer, ref_x, methods))
        ref_t.append(t)
    diffs = {m: float(np.abs(ours[m] - ref[m]).max()) for m in methods}
    worst = max(diffs, key=diffs.get)
    note = f"max |diff| {diffs[worst]:.1e}" + (f" ({worst})" if len(methods) > 1 else "")
    return {"ours": statistics.median(ours_t), "ref": statistics.median(ref_t), "note": note}


def rss_mib() -> float:
    """Resident set size now (Linux /proc), in MiB."""
    import os

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


def worker(args: argparse.Namespace) -> None:
    """Score-CAM in a fresh process: prints seconds per photo and RSS figures as JSON."""
    tune_malloc()
    model = load_model(args.backbone)
    layer = get_backbone(args.backbone).explain_layer
    x, _ = load_photos(args.backbone, args.photos, args.size)
    with torch.no_grad():
        model(x[:1])  # warm the kernels; counted in the baseline
    run = run_ours if args.worker == "ours" else run_reference
    with PeakRss() as mem:
        seconds, _ = timed(lambda: run(model, layer, x, ("scorecam",)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    live = None
    if args.worker == "ours":
        with torch.no_grad():
            acts = {}
            module = dict(model.named_modules())[layer]
            handle = module.register_forward_hook(lambda m, i, o: acts.update(a=o))
            model(x)
            handle.remove()
        flat = acts["a"].flatten(2)
        live = float((flat.amax(2) > flat.amin(2)).float().mean())
    print(
        json.dumps(
            {
                "seconds_per_photo": seconds / len(x),
                "peak_mib": peak,
                "extra_mib": mem.peak - mem.start,
                "live_channels": live,
            }
        )
    )


def scorecam(backbone: str, photos: int, size: int) -> dict[str, dict]:
    out = {}
    for impl in ("ours", "ref"):
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            impl,
            "--backbone",
            backbone,
            "--photos",
            str(photos),
            "--size",
            str(size),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"Score-CAM worker failed:\n{proc.stderr[-2000:]}")
        out[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one repeat; Score-CAM on one Lite0 photo only")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per comparison (default 3)")
    p.add_argument("--worker", choices=("ours", "ref"), help=argparse.SUPPRESS)
    p.add_argument("--backbone", default="efficientnet_lite0", help=argparse.SUPPRESS)
    p.add_argument("--photos", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    tune_malloc()
    repeats = args.repeats or (1 if args.quick else 3)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"{args.size}x{args.size}, median of {repeats} alternating runs after one warm-up\n"
    )
    rows = []

    def row(name: str, what: str, r: dict, per_photo: bool = False) -> None:
        if per_photo:  # seconds per photo: lower is better
            rows.append((name, what, r["ours"], r["ref"], r["ref"] / r["ours"], r["note"]))
        else:  # photos per second from seconds per batch
            rows.append(
                (name, what, args.batch / r["ours"], args.batch / r["ref"], r["ref"] / r["ours"], r["note"])
            )

    for name in BACKBONES:
        model = load_model(name)
        layer = get_backbone(name).explain_layer
        x, source = load_photos(name, args.batch, args.size)
        weights = "ImageNet weights" if name == "efficientnet_lite0" else "random weights"
        print(f"{name} ({weights}), layer {layer}, {source}", flush=True)
        row(name, "Grad-CAM photos/s", compare(model, layer, x, ("gradcam",), repeats))
        if name == "efficientnet_lite0":
            x_cl = x.contiguous(memory_format=torch.channels_last)
            row(name, "  same, ref. channels-last", compare(model, layer, x, ("gradcam",), repeats, x_cl))
        all5 = compare(model, layer, x, GRADIENT_METHODS, 1 if name == "vgg16" else repeats)
        row(name, "5 gradient methods photos/s", all5)
        if args.quick and name != "efficientnet_lite0":
            print("  Score-CAM skipped for vgg16 with --quick (minutes per photo per side)", flush=True)
            continue
        n = 2 if (name == "efficientnet_lite0" and not args.quick) else 1
        sc = scorecam(name, n, args.size)
        ours, ref = sc["ours"], sc["ref"]
        note = (
            f"{n} photo(s); peak RSS {ours['peak_mib']:.0f} vs {ref['peak_mib']:.0f} MiB, "
            f"+{ours['extra_mib']:.0f} vs +{ref['extra_mib']:.0f} MiB while running; "
            f"{ours['live_channels']:.0%} of channels not constant"
        )
        row(
            name,
            "Score-CAM s/photo",
            {"ours": ours["seconds_per_photo"], "ref": ref["seconds_per_photo"], "note": note},
            per_photo=True,
        )
    print()
    head = f"{'backbone':<19} {'measure':<28} {'monkeysee':>10} {'grad-cam':>10} {'speed-up':>9}  notes"
    print(head)
    print("-" * len(head))
    for name, what, ours, ref, ratio, note in rows:
        print(f"{name:<19} {what:<28} {ours:>10.2f} {ref:>10.2f} {ratio:>8.1f}x  {note}")


if __name__ == "__main__":
    main()
