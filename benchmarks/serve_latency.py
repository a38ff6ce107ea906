"""Latency of `monkeysee serve` under concurrent load, with the Grad-CAM in every answer.

Starts the real server (`python -m monkeysee serve`, loopback only) on a run, then N client threads each
send M photos to POST /api/predict and time every answer. Peers measured in the same run, on the same
machine: the same load without micro-batching (--max-batch 1), and without the CAM.

    python benchmarks/serve_latency.py --run runs/lite0            # a trained efficientnet_lite0
    python benchmarks/serve_latency.py                              # builds a random one (same cost)
    python benchmarks/serve_latency.py --species 100 --evidence 10000   # 100 species, an evidence bank of
                                                                    # 10,000 photos, and the same run without
                                                                    # it, and with the plain knn detector

A random run carries the training default's unknown detector (`--detector`, knn_either) with full-size
random banks, so every answer pays the detector's search as a trained run's does.

Bounded: at most --requests per client and --time-limit seconds per configuration.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HOST = "127.0.0.1"  # loopback only, whatever else changes
SHARED_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "monkeys" / "training"


@dataclass
class Load:
    """One configuration's results."""

    name: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    server_cpu: float | None = None  # CPU seconds the server process used during the load

    def row(self) -> dict[str, float]:
        ms = np.asarray(self.latencies) * 1000 if self.latencies else np.asarray([np.nan])
        return {"requests": len(self.latencies) + len(self.failures), "failures": len(self.failures),
                "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
                "p99": float(np.percentile(ms, 99)), "max": float(np.max(ms)),
                "throughput": len(self.latencies) / self.seconds if self.seconds else 0.0,
                "cpu_ms": (self.server_cpu / len(self.latencies) * 1000
                           if self.server_cpu is not None and self.latencies else float("nan"))}


def random_detector(name: str, dim: int, photos: int) -> Any:
    """An unknown detector with full-size random banks: 4,096 stored views and, for `knn_either`, view 0
    of up to 4,096 of the `photos` training photos (what a trained run of that size searches)."""
    from monkeysee.models.unknown import DetectorState, UnknownDetector

    rng = np.random.default_rng(1)
    arrays = {"bank": rng.normal(size=(4096, dim)).astype(np.float32)}
    params: dict[str, Any] = {"k": 10, "max_train": 4096, "seed": 0}
    if name == "knn_either":
        arrays["clean"] = rng.normal(size=(min(4096, photos), dim)).astype(np.float32)
        params |= {"clean_k": 3, "views": 9, "offset": -0.04}
    return UnknownDetector(name, 0.42, 0.95, DetectorState(params, arrays), 0.52)


def build_run(directory: Path, count: int = 10, evidence: int = 0, detector: str = "knn_either") -> Path:
    """A random-weight efficientnet_lite0 run with `count` species at 224 px: the cost of a trained one;
    with `evidence`, an evidence bank of that many random training photos (96 px thumbnails); with a
    `detector` (knn_either, knn or none), that unknown detector with full-size random banks."""
    import torch

    from monkeysee.checkpoint import Manifest
    from monkeysee.data.species import Species
    from monkeysee.models import create_model, get_backbone
    from monkeysee.rundir import RunDir

    torch.manual_seed(0)
    spec = get_backbone("efficientnet_lite0")
    species = tuple(Species(f"n{i}", f"species_{i}", f"genus species{i}") for i in range(count))
    manifest = Manifest(backbone=spec.name, species=species, preprocess=spec.preprocess,
                        explain_layer=spec.explain_layer)
    unknown = None if detector == "none" else random_detector(detector, spec.num_features, evidence or 1000)
    RunDir(directory).save_checkpoint(create_model(spec.name, num_classes=count), manifest, unknown)
    if evidence:
        from PIL import Image

        from monkeysee.data.thumbnails import pack, thumbnail
        from monkeysee.models.evidence import EvidenceBank

        rng = np.random.default_rng(0)
        targets = rng.integers(0, count, evidence)
        feats = np.abs(rng.normal(size=(evidence, spec.num_features))).astype(np.float32)
        bank = EvidenceBank(feats, targets, np.roll(np.arange(count), 1), species)
        thumb = thumbnail(Image.fromarray((rng.random((96, 128, 3)) * 255).astype(np.uint8)))
        blob, offsets = pack([thumb] * evidence)
        RunDir(directory).save_evidence(bank, blob, offsets, [f"photo{i}.jpg" for i in range(evidence)])
    return directory


def default_photo() -> tuple[bytes, str]:
    """A real photo from the shared data when present, else a synthetic 500x375 JPEG."""
    if SHARED_PHOTOS.is_dir():
        for path in sorted(SHARED_PHOTOS.rglob("*.jpg")):
            return path.read_bytes(), str(path)
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = (rng.random((375, 500, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue(), "synthetic 500x375 JPEG"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(run: Path, max_batch: int, precision: str,
                 threads: int | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "monkeysee", "serve", str(run), "--host", HOST, "--port", str(port),
           "--max-batch", str(max_batch), "--precision", precision]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.get(f"{url}/health", timeout=2).raise_for_status()
            return proc, url
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_server(proc)
                log = proc.stderr.read() if proc.stderr else ""
                raise SystemExit(f"server did not start: {log}") from None
            time.sleep(0.2)


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_clients(client: Callable[[], None], clients: int) -> float:
    """Run `client` in `clients` threads at once; wall seconds until the last one returns."""
    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def run_load(name: str, url: str, photo: bytes, clients: int, requests: int, cam: bool,
             time_limit: float) -> Load:
    """`clients` threads, each with its own keep-alive connection, sending `requests` photos in a row."""
    load = Load(name)
    lock = threading.Lock()
    stop_at = time.monotonic() + time_limit
    params = {"cam": "true" if cam else "false"}

    def client() -> None:
        with httpx.Client(timeout=60) as c:
            for _ in range(requests):
                if time.monotonic() > stop_at:
                    return
                start = time.perf_counter()
                try:
                    r = c.post(f"{url}/api/predict", params=params,
                               files={"photo": ("p.jpg", photo, "image/jpeg")})
                    ok = r.status_code == 200 and (not cam or r.json()["cam"]["overlay"].startswith("data:"))
                    problem = "" if ok else f"HTTP {r.status_code}: {r.text[:120]}"
                except (httpx.HTTPError, KeyError, ValueError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                elapsed = time.perf_counter() - start
                with lock:
                    (load.failures.append(problem) if problem else load.latencies.append(elapsed))

    load.seconds = run_clients(client, clients)
    return load


def measure(name: str, run: Path, photo: bytes, args: argparse.Namespace, max_batch: int, cam: bool,
            requests: int, threads: int | None) -> tuple[Load, dict]:
    proc, url = start_server(run, max_batch, args.precision, threads)
    try:
        health = httpx.get(f"{url}/health", timeout=10).json()
        run_load("warm-up", url, photo, clients=args.clients, requests=3, cam=cam, time_limit=60)
        before = cpu_seconds(proc.pid)
        load = run_load(name, url, photo, args.clients, requests, cam, args.time_limit)
        after = cpu_seconds(proc.pid)
        load.server_cpu = None if before is None or after is None else after - before
        return load, health
    finally:
        stop_server(proc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=None, help="run folder (default: build a random lite0 run)")
    p.add_argument("--photo", type=Path, default=None,
                   help="photo to send (default: one from ../shared/data)")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients (default: 4)")
    p.add_argument("--requests", type=int, default=200, help="requests per client (default: 200)")
    p.add_argument("--peer-requests", type=int, default=50,
                   help="requests per client for the peers (default: 50; 0 skips them)")
    p.add_argument("--max-batch", type=int, default=8, help="server micro-batch limit (default: 8)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--threads", type=int, default=None, help="server --threads (default: the server's)")
    p.add_argument("--time-limit", type=float, default=240.0, help="seconds per configuration (default: 240)")
    p.add_argument("--target-p95-ms", type=float, default=150.0)
    p.add_argument("--species", type=int, default=10, help="species of the random run (default: 10)")
    p.add_argument("--evidence", type=int, default=0, metavar="N",
                   help="give the random run an evidence bank of N photos, and measure it without as a peer")
    p.add_argument("--detector", choices=["knn_either", "knn", "none"], default="knn_either",
                   help="the random run's unknown detector (default knn_either, the training default); "
                        "with --evidence, the plain knn is measured beside it as a peer")
    args = p.parse_args()

    photo, photo_name = (args.photo.read_bytes(), str(args.photo)) if args.photo else default_photo()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or build_run(Path(tmp) / "random_lite0", args.species, args.evidence, args.detector)
        cores = os.cpu_count() or 1
        first = "CAM and evidence, micro-batched" if args.evidence and not args.run else "CAM, micro-batched"
        configs = [(first, args.max_batch, True, args.requests, args.threads, run)]
        if args.peer_requests > 0:
            configs += [
                ("CAM, one at a time (--max-batch 1)", 1, True, args.peer_requests, args.threads, run),
                (f"CAM, micro-batched, --threads {cores}", args.max_batch, True, args.peer_requests, cores,
                 run),
                ("no CAM, micro-batched", args.max_batch, False, args.peer_requests, args.threads, run),
            ]
        if args.evidence and not args.run:
            plain = build_run(Path(tmp) / "no_evidence", args.species, 0, args.detector)
            configs.append(("CAM, micro-batched, no evidence bank", args.max_batch, True, args.peer_requests,
                            args.threads, plain))
            if args.detector == "knn_either":
                knn = build_run(Path(tmp) / "knn", args.species, args.evidence, "knn")
                configs.append(("CAM and evidence, plain knn detector", args.max_batch, True,
                                args.peer_requests, args.threads, knn))
        loads = []
        for name, max_batch, cam, requests, threads, folder in configs:
            print(f"measuring: {name} ...", file=sys.stderr, flush=True)
            load, health = measure(name, folder, photo, args, max_batch, cam, requests, threads)
            loads.append(load)

    weights = "given" if args.run else "random weights"
    print(f"\nmonkeysee serve latency: {health['backbone']} ({health['species_count']} species, "
          f"{health['input_size']} px, {health['precision']}), run {weights}")
    print(f"machine: {os.cpu_count()} CPUs, load average {load_before:.1f} before and "
          f"{os.getloadavg()[0]:.1f} after (other work on the machine slows every number below)")
    print(f"load: {args.clients} clients on loopback; photo: {photo_name} ({len(photo) / 1024:.0f} kB)\n")
    rows = [(load.name, load.row()) for load in loads]
    base = rows[0][1]
    head = f"{'configuration':<40}{'requests':>9}{'fail':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}" \
           f"{'max ms':>9}{'req/s':>8}{'CPU ms/req':>11}{'p95 ×':>7}"
    print(head)
    print("-" * len(head))
    for name, r in rows:
        print(f"{name:<40}{r['requests']:>9}{r['failures']:>6}{r['p50']:>9.1f}{r['p95']:>9.1f}{r['p99']:>9.1f}"
              f"{r['max']:>9.1f}{r['throughput']:>8.1f}{r['cpu_ms']:>11.1f}{r['p95'] / base['p95']:>7.2f}")
    failures = [f for load in loads for f in load.failures]
    for f in sorted(set(failures))[:5]:
        print(f"failure: {f}")
    ok = base["p95"] <= args.target_p95_ms and not loads[0].failures
    print(f"\ntarget: p95 <= {args.target_p95_ms:g} ms with CAM and 0 failures: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
