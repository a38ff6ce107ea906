"""`monkeysee serve` under abuse: slow clients beside normal ones, and memory-hungry photos at once.

Starts the real server (`python -m monkeysee serve`, loopback only, its default limits) on a run, then:

1. slow clients: 4 normal clients send photos while 64 slow ones from another address (127.0.0.2; half
   trickling request headers, half trickling upload bodies, a byte every half second, reconnecting
   whenever cut off) hold connections.
   Peer measured in the same run: the same 4 clients alone. Prints normal p50/p95, failures, and what
   the slow clients were answered.
2. memory: 8 worst-case photos at once, per kind (each just under --max-decode-mb, and the 104 kB
   16-bit 7000x7000 PNG over it). Prints the peak server RSS rise against the stated ceiling
   (`ServeConfig.memory_ceiling_bytes`).
3. a burst of large uploads: 8 x a 7100x7030 (50 MP) JPEG at once, --rounds times. Prints the server's
   RSS before, at its peak and once the burst is over, against the ceiling.
4. one address trickling headers: --trickle connections from 127.0.0.2, each sending part of a request
   header a byte at a time and reconnecting whenever answered, while a keeper on 127.0.0.1 asks /health
   and sends a photo --tries times. Every keeper request must be answered 200.

    python benchmarks/serve_abuse.py --run runs/lite0      # a trained run
    python benchmarks/serve_abuse.py                        # builds a random efficientnet_lite0 run

Bounded: --seconds per slow-client phase, 8 photos per memory kind, --rounds bursts, --tries keeper
requests (the trickler stops with them, or after --seconds x 3).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import selectors
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_latency import HOST, Load, build_run, default_photo, run_clients, start_server, stop_server

SLOW_GAP_S = 0.5  # a slow client sends one byte this often
TRICKLER = "127.0.0.2"  # Linux routes all of 127.0.0.0/8 to loopback: a second client address
KEEPER = "127.0.0.1"
RECONNECT_S = 0.05  # an answered trickler connects again after this pause (bounds the refusals per second)


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
            with socket.create_connection(self.address, timeout=30, source_address=(TRICKLER, 0)) as s:
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



def large_jpeg(size: tuple[int, int] = (7100, 7030)) -> bytes:
    """A photo-like 50 MP JPEG of a few MB (smooth colour fields with grain), under the upload limit."""
    rng = np.random.default_rng(1)
    small = Image.fromarray(rng.integers(0, 255, (size[1] // 40, size[0] // 40, 3), dtype=np.uint8))
    big = small.resize(size, Image.Resampling.BICUBIC)
    return _encode(big, "JPEG", quality=80)


def large_bursts(url: str, pid: int, photo: bytes, rounds: int) -> tuple[int, int, int, Counter[str]]:
    """`rounds` bursts of 8 at once; (RSS before, peak RSS, RSS after the last burst, statuses)."""
    before, peak, statuses = rss(pid), rss(pid), Counter[str]()
    for _ in range(rounds):
        top, counts, _ = burst(url, pid, photo)
        peak = max(peak, top)
        statuses.update(counts)
    return before, peak, rss(pid), statuses


class HeaderTrickler:
    """`n` connections from one address, each sending part of a request header a byte every
    SLOW_GAP_S and reconnecting RECONNECT_S after it is answered or cut off (one thread, a selector)."""

    def __init__(self, url: str, n: int, source: str = TRICKLER) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.address, self.source, self.n = (host, int(port)), source, n
        self.answers: Counter[str] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HeaderTrickler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)

    def _open(self, sel: selectors.BaseSelector) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((self.source, 0))
        s.settimeout(5)
        with contextlib.suppress(OSError):  # answered and closed already: the select sees it
            s.connect(self.address)
            s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, time.monotonic())

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        reopen: list[float] = []  # when each answered connection comes back, in order
        for _ in range(self.n):
            self._open(sel)
        while not self.stop.is_set():
            for key, _ in sel.select(SLOW_GAP_S / 4):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    reply = s.recv(4096)
                except OSError as exc:
                    reply = type(exc).__name__.encode()
                sel.unregister(s)
                s.close()
                self.answers[reply.split(b"\r\n", 1)[0].decode("latin-1") or "closed"] += 1
                reopen.append(time.monotonic() + RECONNECT_S)
            now = time.monotonic()
            while reopen and reopen[0] <= now:
                reopen.pop(0)
                self._open(sel)
            for key in list(sel.get_map().values()):
                if now - key.data >= SLOW_GAP_S:
                    sel.modify(key.fileobj, selectors.EVENT_READ, now)
                    with contextlib.suppress(OSError):  # answered and closed: the select sees it
                        key.fileobj.send(b"z")  # type: ignore[union-attr]
        for key in list(sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]


def keeper_tries(url: str, photo: bytes, tries: int) -> Counter[str]:
    """/health and a photo from the keeper's own address, `tries` times, a second apart."""
    outcomes: Counter[str] = Counter()
    with httpx.Client(transport=httpx.HTTPTransport(local_address=KEEPER), timeout=60) as c:
        for _ in range(tries):
            for what, send in (("health", lambda: c.get(f"{url}/health")),
                               ("predict", lambda: c.post(f"{url}/api/predict", params={"cam": "false"},
                                                          files={"photo": ("k.jpg", photo, "image/jpeg")}))):
                try:
                    outcomes[f"{what} {send().status_code}"] += 1
                except httpx.HTTPError as exc:
                    outcomes[f"{what} {type(exc).__name__}"] += 1
            time.sleep(1.0)
    return outcomes


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
    """Photos that cost just under the per-photo decoding limit, one per expensive path, and the
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
        ("16-bit grey PNG 7000x7000 (374 MB to decode)", _encode(Image.new("I;16", (7000, 7000)), "PNG")),
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


def report_kinds(bursts: list, ceiling: float) -> float:
    """Print the worst-photo bursts; the largest rise in MB."""
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
    return worst


def report_large(large: tuple[int, int, int, int, Counter[str]], rounds: int, ceiling: float) -> bool:
    """Print the bursts of 50 MP uploads; True when peak and settled rise stay under the ceiling."""
    size, before, peak, after, statuses = large
    rise, left = (peak - before) / 1024**2, (after - before) / 1024**2
    answers = ", ".join(f"{n}x {s}" for s, n in statuses.items())
    print(f"\n{rounds} bursts of 8 x a 7100x7030 JPEG ({size / 1024**2:.1f} MB) at once: answers {answers}")
    print(f"server RSS: {before / 1024**2:,.0f} MB before, {peak / 1024**2:,.0f} MB at the peak "
          f"(+{rise:,.0f}), {after / 1024**2:,.0f} MB after (+{left:,.0f}); ceiling {ceiling:,.0f} MB")
    return rise <= ceiling and left <= ceiling


def report_trickle(trickler: HeaderTrickler, keeper: Counter[str], tries: int) -> bool:
    """Print what the trickler and the keeper were answered; True when the keeper always got 200."""
    print(f"\n{trickler.n} connections trickling headers from {trickler.source}; keeper on {KEEPER}:")
    for outcome, count in sorted(keeper.items()):
        print(f"  keeper {count:>4} x {outcome}")
    for outcome, count in trickler.answers.most_common(4):
        print(f"  trickler {count:>6} x {outcome}")
    return keeper["health 200"] == keeper["predict 200"] == tries


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=None, help="run folder (default: build a random lite0 run)")
    p.add_argument("--slow", type=int, default=64, help="slow clients (default: 64)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds per slow-client phase (default: 20)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--rounds", type=int, default=4, help="bursts of 8 large uploads (default: 4)")
    p.add_argument("--trickle", type=int, default=520, help="header-trickling connections (default: 520)")
    p.add_argument("--tries", type=int, default=31, help="keeper requests beside them (default: 31)")
    p.add_argument("--skip", nargs="*", default=[], choices=["slow", "kinds", "large", "trickle"],
                   help="phases to leave out")
    args = p.parse_args()

    from monkeysee.serve import ServeConfig

    photo, photo_name = default_photo()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or build_run(Path(tmp) / "random_lite0")
        config = ServeConfig(run)
        bursts: list = []
        if "slow" not in args.skip:
            with served(run, args.precision, photo) as (_, url):
                say(f"measuring: 4 normal clients alone for {args.seconds:g} s ...")
                alone = normal_load(url, photo, args.seconds)
                say(f"measuring: 4 normal clients beside {args.slow} slow ones ...")
                with SlowClients(url, args.slow) as slow:
                    crowded = normal_load(url, photo, args.seconds)
        for name, data in [] if "kinds" in args.skip else worst_photos(config.max_decode_mb):
            say(f"measuring: 8 x {name} at once, on a fresh server ...")
            with served(run, args.precision, photo) as (pid, url):
                bursts.append((name, len(data), rss(pid), *burst(url, pid, data)))
        if "large" not in args.skip:
            say(f"measuring: {args.rounds} bursts of 8 x 50 MP JPEG, on a fresh server ...")
            big = large_jpeg()
            with served(run, args.precision, photo) as (pid, url):
                large = (len(big), *large_bursts(url, pid, big, args.rounds))
        if "trickle" not in args.skip:
            say(f"measuring: a keeper beside {args.trickle} header-trickling connections ...")
            with (served(run, args.precision, photo) as (_, url),
                  HeaderTrickler(url, args.trickle) as trickler):
                keeper = keeper_tries(url, photo, args.tries)

    weights = "given" if args.run else "random weights"
    print(f"\nmonkeysee serve under abuse, run {weights}; photo {photo_name}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; server on {HOST}\n")
    ok = True
    if "slow" not in args.skip:
        report_slow(alone, crowded, slow, args.slow)
        ok &= not crowded.failures
    ceiling = config.memory_ceiling_bytes / 1024**2
    print(f"\nmemory: stated ceiling for photos {ceiling:,.0f} MB beyond the model's own (decode budget "
          f"{config.decode_budget_mb:g} MB, {config.max_decode_mb:g} MB per photo); each burst on a fresh "
          "server, rise = peak RSS during the burst - RSS after a warm-up")
    if bursts:
        ok &= report_kinds(bursts, ceiling) <= ceiling
    if "large" not in args.skip:
        ok &= report_large(large, args.rounds, ceiling)
    if "trickle" not in args.skip:
        ok &= report_trickle(trickler, keeper, args.tries)
    print(f"\ntargets (no normal failures beside slow clients, every rise <= ceiling, the keeper always "
          f"answered): {'met' if ok else 'NOT met'}")
    return 0


@contextlib.contextmanager
def served(run: Path, precision: str, photo: bytes) -> Iterator[tuple[int, str]]:
    """A fresh `monkeysee serve` on loopback, warmed up (the model's own memory is in the baseline)."""
    from monkeysee.serve import ServeConfig

    proc, url = start_server(run, ServeConfig(run).max_batch, precision, None)
    try:
        normal_load(url, photo, 2)
        yield proc.pid, url
    finally:
        stop_server(proc)


if __name__ == "__main__":
    sys.exit(main())
