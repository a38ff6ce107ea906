"""`monkeysee serve` under abuse: slow clients beside normal ones, and memory-hungry photos at once.

Starts the real server (`python -m monkeysee serve`, loopback only, its default limits) on a run, then:

1. slow clients: 4 normal clients send photos while 64 slow ones (half trickling request headers, half
   trickling upload bodies, a byte every half second, reconnecting whenever cut off) hold connections.
   Peer measured in the same run: the same 4 clients alone. Prints normal p50/p95, failures, and what
   the slow clients were answered.
2. memory: 8 worst-case photos at once, per kind (each just under --max-decode-mb, and the 104 kB
   16-bit 7000x7000 PNG over it). Prints the peak server RSS rise against the stated ceiling
   (`ServeConfig.memory_ceiling_bytes`).

    python benchmarks/serve_abuse.py --run runs/lite0      # a trained run
    python benchmarks/serve_abuse.py                        # builds a random efficientnet_lite0 run

Bounded: --seconds per slow-client phase, 8 photos per memory kind.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_latency import HOST, Load, build_run, default_photo, run_clients, start_server, stop_server

SLOW_GAP_S = 0.5  # a slow client sends one byte this often


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class SlowClients:
    """`n` threads, each holding one connection open by trickling bytes, reconnecting when cut off."""

    def __init__(self, url: str, n: int) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.n = n
        self.outcomes: Counter[str] = Counter()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True) for i in range(n)]

    def __enter__(self) -> SlowClients:
        for t in self.threads:
            t.start()
        time.sleep(1.0)  # let them all connect
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)

    def _run(self, headers_only: bool) -> None:
        while not self.stop.is_set():
            outcome = self._once(headers_only)
            with self.lock:
                self.outcomes[f"{'header' if headers_only else 'body'} trickler: {outcome}"] += 1

    def _once(self, headers_only: bool) -> str:
        try:
            with socket.create_connection(self.address, timeout=30) as s:
                s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\n")
                if not headers_only:  # a well-formed start, so the server waits for the rest
                    s.sendall(b"Content-Length: 200000\r\n"
                              b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
                              b'Content-Disposition: form-data; name="photo"; filename="s.jpg"\r\n\r\n')
                s.settimeout(SLOW_GAP_S)
                while not self.stop.is_set():
                    try:
                        reply = s.recv(4096)
                    except TimeoutError:
                        s.sendall(b"X" if headers_only else b"\xff")
                        continue
                    return reply.split(b"\r\n", 1)[0].decode("latin-1") or "closed without an answer"
                return "still open at the end"
        except OSError as exc:
            return f"{type(exc).__name__}"


def normal_load(url: str, photo: bytes, seconds: float, clients: int = 4) -> Load:
    """`clients` threads sending photos (no CAM) and /health in a row for `seconds`."""
    load = Load("normal")
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(timeout=30) as c:
            while time.monotonic() < stop_at:
                start = time.perf_counter()
                try:
                    r = c.post(f"{url}/api/predict", params={"cam": "false"},
                               files={"photo": ("p.jpg", photo, "image/jpeg")})
                    h = c.get(f"{url}/health")
                    ok = r.status_code == h.status_code == 200
                    problem = "" if ok else f"HTTP {r.status_code}/{h.status_code}"
                except httpx.HTTPError as exc:
                    problem = type(exc).__name__
                with lock:
                    (load.failures.append(problem) if problem else
                     load.latencies.append(time.perf_counter() - start))

    load.seconds = run_clients(client, clients)
    return load


def _encode(im: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **options)
    return buf.getvalue()


def worst_photos(max_decode_mb: float) -> list[tuple[str, bytes]]:
    """Photos that cost just under the per-photo decoding limit, one per expensive path, and the issue's
    16-bit 7000x7000 PNG (over it)."""
    from monkeysee.data.images import decode_bytes

    budget = max_decode_mb * 1024**2 * 0.98
    def side(mode: str, fmt: str, **kw: bool) -> int:
        return int((budget / decode_bytes(mode, (1, 1), fmt, **kw)) ** 0.5)

    s16, srgba = side("I;16", "PNG"), side("RGBA", "PNG")
    sjpg = side("RGB", "JPEG", rotated=True, progressive=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (sjpg, sjpg, 3), dtype=np.uint8))
    return [
        (f"16-bit grey PNG {s16}x{s16}", _encode(Image.new("I;16", (s16, s16)), "PNG")),
        (f"RGBA PNG {srgba}x{srgba}", _encode(Image.new("RGBA", (srgba, srgba), (9, 9, 9, 128)), "PNG")),
        (f"progressive rotated JPEG {sjpg}x{sjpg}", _encode(noise, "JPEG", progressive=True, exif=exif)),
        ("16-bit grey PNG 7000x7000 (the issue's)", _encode(Image.new("I;16", (7000, 7000)), "PNG")),
    ]


def burst(url: str, pid: int, photo: bytes, n: int = 8) -> tuple[int, Counter[str], float]:
    """Send `n` copies at once; (peak RSS, statuses, seconds)."""
    peak = rss(pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.01):
            peak = max(peak, rss(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()

    def send(_: int) -> str:
        r = httpx.post(f"{url}/api/predict", params={"cam": "false"}, timeout=300,
                       files={"photo": ("worst", photo, "application/octet-stream")})
        return f"{r.status_code} {r.json().get('error', 'ok')}"

    with ThreadPoolExecutor(n) as pool:
        statuses = Counter(pool.map(send, range(n)))
    done.set()
    sampler.join()
    return peak, statuses, time.perf_counter() - start


def report_slow(alone: Load, crowded: Load, slow: SlowClients, n: int) -> None:
    head = (f"{'normal clients (predict + /health)':<44}{'requests':>9}{'fail':>6}{'p50 ms':>9}"
            f"{'p95 ms':>9}{'p95 ×':>7}")
    print(head)
    print("-" * len(head))
    ref = alone.row()
    for name, load in (("alone", alone), (f"beside {n} slow clients", crowded)):
        r = load.row()
        print(f"{name:<44}{r['requests']:>9}{r['failures']:>6}{r['p50']:>9.1f}{r['p95']:>9.1f}"
              f"{r['p95'] / ref['p95']:>7.2f}")
    for f in sorted(set(crowded.failures))[:5]:
        print(f"failure: {f}")
    print("\nslow clients were answered:")
    for outcome, count in sorted(slow.outcomes.items()):
        print(f"  {count:>4} x {outcome}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=None, help="run folder (default: build a random lite0 run)")
    p.add_argument("--slow", type=int, default=64, help="slow clients (default: 64)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds per slow-client phase (default: 20)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--skip-slow", action="store_true", help="measure memory only")
    args = p.parse_args()

    from monkeysee.serve import ServeConfig

    photo, photo_name = default_photo()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or build_run(Path(tmp) / "random_lite0")
        config = ServeConfig(run)
        bursts = []
        if not args.skip_slow:
            proc, url = start_server(run, config.max_batch, args.precision, None)
            try:
                normal_load(url, photo, 3)  # warm-up
                say(f"measuring: 4 normal clients alone for {args.seconds:g} s ...")
                alone = normal_load(url, photo, args.seconds)
                say(f"measuring: 4 normal clients beside {args.slow} slow ones ...")
                with SlowClients(url, args.slow) as slow:
                    crowded = normal_load(url, photo, args.seconds)
            finally:
                stop_server(proc)
        for name, data in worst_photos(config.max_decode_mb):
            say(f"measuring: 8 x {name} at once, on a fresh server ...")
            proc, url = start_server(run, config.max_batch, args.precision, None)
            try:
                normal_load(url, photo, 2)  # warm-up: the model's own memory is in the baseline
                base = rss(proc.pid)
                bursts.append((name, len(data), base, *burst(url, proc.pid, data)))
            finally:
                stop_server(proc)

    weights = "given" if args.run else "random weights"
    print(f"\nmonkeysee serve under abuse, run {weights}; photo {photo_name}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; server on {HOST}\n")
    if not args.skip_slow:
        report_slow(alone, crowded, slow, args.slow)
    ceiling = config.memory_ceiling_bytes / 1024**2
    print(f"\nmemory, each kind on a fresh server: stated ceiling for photos {ceiling:,.0f} MB beyond the "
          f"model's own (decode budget {config.decode_budget_mb:g} MB, {config.max_decode_mb:g} MB per "
          "photo); rise = peak RSS during the burst - RSS after a warm-up")
    head = (f"{'8 at once':<44}{'file kB':>9}{'answers':>26}{'seconds':>9}{'base MB':>9}"
            f"{'rise MB':>9}{'/ ceiling':>10}")
    print(head)
    print("-" * len(head))
    worst = 0.0
    for name, size, base, peak, statuses, seconds in bursts:
        rise = (peak - base) / 1024**2
        worst = max(worst, rise)
        answers = ", ".join(f"{n}x {s}" for s, n in statuses.items())
        print(f"{name:<44}{size / 1024:>9.0f}{answers:>26}{seconds:>9.1f}{base / 1024**2:>9.0f}"
              f"{rise:>9.0f}{rise / ceiling:>10.2f}")
    ok = (args.skip_slow or not crowded.failures) and worst <= ceiling
    verdict = "met" if ok else "NOT met"
    print(f"\ntarget: no normal failures beside slow clients, peak rise <= ceiling: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
