"""The keeper's log under load: 8 keepers at once saving sightings with photos to a running server, on
SQLite and on PostgreSQL, then the server killed with SIGKILL in the middle of it.

For each database:
1. load: --keepers keepers (own tokens) each save --saves sightings of 1-2 photos at once (every photo
   distinct, every save with its own key). Prints lost (acknowledged but not in the log), duplicated
   (a photo in more than one sighting, or more sightings than saves), p50/p95 of a save, and the ratio
   of a save's p95 to a /api/predict of one photo (the peer, measured on the same server in the run).
2. crash: the same keepers save again; once --kill-after saves are acknowledged the server gets SIGKILL.
   After a restart every keeper retries, with the same key, each save it had no answer for. Prints
   acknowledged before the kill, lost, duplicated, and half-written sightings (no photo, a photo file
   missing or not matching its hash, no 'recorded' event).

    python benchmarks/log_load.py                 # a tiny random run; SQLite and PostgreSQL
    python benchmarks/log_load.py --db sqlite --saves 20

PostgreSQL: a throwaway server from the Debian binaries (skipped with a message when absent).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

HOST = "127.0.0.1"


def build_run(directory: Path) -> Path:
    """A random efficientnet_lite0 at 64 px with 3 species: the log's cost, not a big model's."""
    import torch

    from monkeysee.checkpoint import Manifest
    from monkeysee.data.species import Species
    from monkeysee.models import Preprocess, create_model, get_backbone
    from monkeysee.rundir import RunDir

    torch.manual_seed(0)
    spec = get_backbone("efficientnet_lite0")
    species = tuple(Species(f"n{i}", f"species_{i}", f"genus species{i}") for i in range(3))
    pre = Preprocess(64, 0.875, spec.preprocess.interpolation, spec.preprocess.mean, spec.preprocess.std)
    manifest = Manifest(backbone=spec.name, species=species, preprocess=pre, explain_layer=spec.explain_layer)
    RunDir(directory).save_checkpoint(create_model(spec.name, num_classes=3), manifest)
    return directory


def photo(seed: int) -> bytes:
    """A distinct 96x72 JPEG per seed."""
    rng = np.random.default_rng(seed)
    pixels = (rng.random((72, 96, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


@contextmanager
def postgres() -> Iterator[str | None]:
    """A URL of a throwaway PostgreSQL server, or None when it is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        yield None
        return
    bin_dir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="monkeysee-pg-"))

    def as_pg(cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(as_pg([str(bin_dir / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "postgres",
                          "-E", "UTF8", "--locale", "C"]), check=True, capture_output=True)
    opts = f"-k {root} -c listen_addresses=''"  # durable settings (fsync on): the crash test means it
    subprocess.run(as_pg([str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-o", opts, "-w", "-l",
                          str(root / "log.txt"), "start"]), check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={root}"
    finally:
        subprocess.run(as_pg([str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start(run: Path, db: str, photos: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "monkeysee", "serve", str(run), "--host", HOST, "--port", str(port),
           "--db", db, "--photos", str(photos), "--threads", "1", "--precision", "fp32"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{HOST}:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start")


class Keeper(threading.Thread):
    """One keeper saving `saves` sightings; records each save's latency and which keys were acknowledged."""

    def __init__(self, url: str, token: str, index: int, saves: int, phase: int,
                 stop_at: threading.Event | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.index, self.saves, self.phase = url, token, index, saves, phase
        self.stop_at = stop_at
        self.latencies: list[float] = []
        self.acked: set[str] = set()
        self.unanswered: list[int] = []

    def request(self, i: int) -> tuple[str, list[tuple[str, tuple[str, bytes, str]]]]:
        seed = (self.phase * 100 + self.index) * 10_000 + i * 2
        files = [("photos", (f"{seed + j}.jpg", photo(seed + j), "image/jpeg")) for j in range(1 + i % 2)]
        return f"p{self.phase}-k{self.index}-{i}", files

    def save(self, client: httpx.Client, i: int) -> bool:
        key, files = self.request(i)
        start = time.perf_counter()
        r = client.post(f"{self.url}/api/log/sightings", files=files,
                        data={"key": key, "place_text": f"enclosure {i % 5}"},
                        headers={"authorization": f"Bearer {self.token}"})
        if r.status_code == 201:
            self.latencies.append(time.perf_counter() - start)
            self.acked.add(key)
            return True
        raise RuntimeError(f"save {key}: {r.status_code} {r.text[:200]}")

    def run(self) -> None:
        with httpx.Client(timeout=60) as client:
            for i in range(self.saves):
                try:
                    self.save(client, i)
                except (httpx.HTTPError, RuntimeError):
                    self.unanswered.append(i)


def check(db: str, photos: Path, saved_keys: set[str]) -> dict[str, int]:
    """Lost, duplicated and half-written sightings, read straight from the database and photo folder."""
    from monkeysee.sightings import Store

    store = Store.open(db, photos=photos)
    try:
        views = list(store.all())
        keys = Counter(v.key for v in views)
        per_photo = Counter(p.sha256 for v in views for p in v.photos)
        half = 0
        for v in views:
            files_ok = all(_file_ok(store.photos.path(p.location), p.sha256) for p in v.photos)
            recorded = any(e.action == "recorded" for e in store.history(v.id))
            half += not (v.photos and files_ok and recorded)
    finally:
        store.close()
    return {"sightings": len(views), "lost": len(saved_keys - set(keys)),
            "duplicated": sum(n - 1 for n in keys.values()) + sum(n - 1 for n in per_photo.values()),
            "half_written": half}


def _file_ok(path: Path, sha256: str) -> bool:
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def predict_peer(url: str, clients: int, each: int = 10) -> list[float]:
    """Latencies of /api/predict (one photo, no CAM) from `clients` clients at once: the model's share."""
    latencies: list[float] = []

    def client(c: int) -> None:
        with httpx.Client(timeout=60) as http:
            for i in range(each):
                t = time.perf_counter()
                files = {"photo": ("p.jpg", photo(10**9 + c * 100 + i))}
                r = http.post(f"{url}/api/predict?cam=false", files=files)
                r.raise_for_status()
                latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def one_database(name: str, db: str, run: Path, work: Path, args: argparse.Namespace) -> None:
    from monkeysee.sightings import Store

    photos = work / f"{name}-photos"
    store = Store.open(db, photos=photos)
    tokens = [store.add_keeper(f"keeper {i}")[1] for i in range(args.keepers)]
    store.close()
    port = free_port()
    url = f"http://{HOST}:{port}"
    proc = start(run, db, photos, port)
    try:
        peer = predict_peer(url, args.keepers)
        keepers = [Keeper(url, tokens[k], k, args.saves, phase=1) for k in range(args.keepers)]
        t0 = time.perf_counter()
        for k in keepers:
            k.start()
        for k in keepers:
            k.join()
        wall = time.perf_counter() - t0
        lat = [x for k in keepers for x in k.latencies]
        acked = set().union(*(k.acked for k in keepers))
        failed = sum(len(k.unanswered) for k in keepers)
        result = check(db, photos, acked)
        print(f"[{name}] load: {args.keepers} keepers x {args.saves} saves in {wall:.1f} s; acknowledged "
              f"{len(acked)}, failed {failed}; lost {result['lost']}, duplicated {result['duplicated']}, "
              f"half-written {result['half_written']}")
        print(f"[{name}] save p50 {pct(lat, 50):.0f} ms, p95 {pct(lat, 95):.0f} ms (target <= 300); peer "
              f"/api/predict of one photo ({args.keepers} clients at once) p95 {pct(peer, 95):.0f} ms; "
              f"ratio save p95 / predict p95 = {pct(lat, 95) / pct(peer, 95):.2f}")
    finally:
        proc.kill()
        proc.wait()
    crash(name, db, run, photos, tokens, acked, args)


def crash(name: str, db: str, run: Path, photos: Path, tokens: list[str], before: set[str],
          args: argparse.Namespace) -> None:
    port = free_port()
    url = f"http://{HOST}:{port}"
    proc = start(run, db, photos, port)
    keepers = [Keeper(url, tokens[k], k, args.saves, phase=2) for k in range(args.keepers)]
    for k in keepers:
        k.start()
    while sum(len(k.acked) for k in keepers) < args.kill_after and any(k.is_alive() for k in keepers):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for k in keepers:
        k.join()
    acked = set().union(*(k.acked for k in keepers))
    after_kill = check(db, photos, before | acked)
    print(f"[{name}] SIGKILL after {len(acked)} acknowledged saves: lost {after_kill['lost']}, duplicated "
          f"{after_kill['duplicated']}, half-written {after_kill['half_written']} "
          f"({after_kill['sightings'] - len(before)} sightings of this phase in the log)")
    proc = start(run, db, photos, port)
    try:
        with httpx.Client(timeout=60) as client:
            for k in keepers:
                for i in k.unanswered:
                    k.save(client, i)
    finally:
        proc.kill()
        proc.wait()
    everything = set().union(before, *(k.acked for k in keepers))
    final = check(db, photos, everything)
    print(f"[{name}] after restart and retries with the same keys: {final['sightings']} sightings for "
          f"{len(everything)} saves; lost {final['lost']}, duplicated {final['duplicated']}, half-written "
          f"{final['half_written']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keepers", type=int, default=8)
    p.add_argument("--saves", type=int, default=100, help="saves per keeper")
    p.add_argument("--kill-after", type=int, default=300, help="acknowledged saves before the SIGKILL")
    p.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    args = p.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared with other work: "
          "timings move with it)")
    with tempfile.TemporaryDirectory(prefix="log-load-") as tmp:
        work = Path(tmp)
        run = build_run(work / "run")
        if args.db in ("sqlite", "both"):
            one_database("sqlite", str(work / "log.db"), run, work, args)
        if args.db in ("postgresql", "both"):
            with postgres() as url:
                if url is None:
                    print("[postgresql] skipped: PostgreSQL is not installed (apt-get install postgresql)")
                else:
                    one_database("postgresql", url, run, work, args)


if __name__ == "__main__":
    main()
