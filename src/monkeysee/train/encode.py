"""Encoding photos into a `FeatureStore`: each missing view of each photo decoded, transformed (the
augmented views from their own seeded generator) and sent through the frozen layers once."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, get_worker_info
from tqdm.auto import tqdm

from monkeysee.data.images import load_rgb, load_rgb_bytes
from monkeysee.data.layout import Sample, Skipped
from monkeysee.errors import ConfigError, ImageError
from monkeysee.models.fold import folded
from monkeysee.runtime import autocast
from monkeysee.train.keys import Transform, content_key, module_fingerprint, view_seed
from monkeysee.train.store import SHARD_ROWS, FeatureStore


@dataclass
class EncodeReport:
    """What one `encode_into` call did."""

    photos: int = 0  # photos with at least one view encoded
    views: int = 0  # view activations encoded
    shards: int = 0
    seconds: float = 0.0
    skipped: list[Skipped] = field(default_factory=list)  # unreadable photos and why


@dataclass(frozen=True)
class _Job:
    position: int  # in the caller's sample list
    path: Path
    views: tuple[int, ...]  # the views still missing


class _MissingViews(Dataset):
    """Items: (stacked missing views, their view numbers, content key, position), or a skip reason."""

    def __init__(self, jobs: list[_Job], clean: Transform, augmented: Transform | None, seed: int) -> None:
        self.jobs, self.clean, self.augmented, self.seed = jobs, clean, augmented, seed

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        if get_worker_info() is not None:  # DataLoader workers already run torch on one thread
            return self._item(self.jobs[i])
        # In the main process, per-photo tensor ops on several threads spend more time handing work
        # between threads than working (measured 38 ms vs 2 ms per 224x224 photo on 2 busy cores).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._item(self.jobs[i])
        finally:
            torch.set_num_threads(threads)

    def _item(self, job: _Job) -> tuple[Any, ...]:
        try:
            data, image = _read(job.path)
        except ImageError as exc:
            return None, exc.message, job.position
        content = content_key(data)  # of the bytes decoded, even if the file changed since `missing`
        out = []
        for v in job.views:
            if v == 0:
                out.append(self.clean(image))
                continue
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(view_seed(self.seed, content, v))
                out.append(self.augmented(image))  # type: ignore[misc]
        return torch.stack(out), list(job.views), content, job.position


def _read(path: Path) -> tuple[bytes, Image.Image]:
    """The file's bytes (read once, for the key) and the photo they decode to."""
    try:
        data = path.read_bytes()
    except OSError:
        data = b""
    if not data:  # missing, unreadable or empty: let load_rgb say which, in its words
        load_rgb(path)
        raise ImageError("file changed while reading", fix="run again", path=path)
    return data, load_rgb_bytes(data, name=str(path))


def _collate(items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return items


def _jobs(store: FeatureStore, samples: Sequence[Sample], augmented_views: int) -> list[_Job]:
    """One job per photo lacking any of views 0..`augmented_views`; a duplicate photo is encoded once."""
    keys = store.content_keys(samples)
    jobs, scheduled = [], set()
    for i, (sample, c) in enumerate(zip(samples, keys, strict=True)):
        need = tuple(v for v in range(augmented_views + 1) if c is None or not store.has(c, v))
        if need and (c is None or c not in scheduled):
            jobs.append(_Job(i, Path(sample.path), need))
            scheduled.add(c)
    return jobs


class _Shards:
    """Encoded rows waiting to be written, per table (clean, augmented): both tables are written once
    enough rows wait, so a photo's views land in the store together."""

    def __init__(self, store: FeatureStore, rows: int, report: EncodeReport) -> None:
        self.store, self.rows, self.report = store, rows, report
        self.pending: dict[bool, list[tuple[torch.Tensor, list[str], list[int]]]] = {False: [], True: []}

    def add(self, out: torch.Tensor, views: list[int], contents: list[str]) -> None:
        for augmented in (False, True):
            at = [j for j, v in enumerate(views) if (v > 0) == augmented]
            if at:
                self.pending[augmented].append((out[at], [contents[j] for j in at], [views[j] for j in at]))
        self.flush(force=False)

    def flush(self, force: bool) -> None:
        if not force and sum(len(c) for parts in self.pending.values() for _, c, _ in parts) < self.rows:
            return
        for augmented, parts in self.pending.items():
            if parts:
                self.store.write(torch.cat([a for a, _, _ in parts]), [c for _, cs, _ in parts for c in cs],
                                 [v for _, _, vs in parts for v in vs])
                self.report.shards += 1
            self.pending[augmented] = []


@torch.inference_mode()
def encode_into(
    store: FeatureStore,
    lower: nn.Module,
    samples: Sequence[Sample],
    clean: Transform,
    augmented: Transform | None,
    augmented_views: int,
    *,
    batch_size: int = 64,
    workers: int = 0,
    device: torch.device | str = "cpu",
    progress: bool | None = None,
    desc: str = "frozen layers",
    shard_rows: int = SHARD_ROWS,
) -> EncodeReport:
    """Encode view 0 (clean) and views 1..`augmented_views` of every sample the store lacks.

    Shards are written as they fill, so a kill keeps every finished shard and a rerun encodes only
    the rest. `lower` must be the frozen stages `store.key` was made for (eval mode, not checked
    beyond the weights fingerprint); precision and seed come from the key. `batch_size` counts
    images (views), not photos. `progress=None` shows a bar only on a terminal.
    """
    if augmented_views > 0 and augmented is None:
        raise ConfigError(f"{augmented_views} augmented view(s) asked for but no augmented transform given",
                          fix="pass the training transform, or views=0")
    if module_fingerprint(lower) != store.key.weights:
        raise ConfigError("these frozen layers are not the ones the store key was made for",
                          fix="build the key with StoreKey.for_encoding from this module")
    t0 = time.perf_counter()
    jobs = _jobs(store, samples, augmented_views)
    report = EncodeReport()
    if not jobs:
        return report
    device = torch.device(device)
    net = folded(lower) if store.key.folded else lower
    per_photo = max(len(j.views) for j in jobs)
    loader = DataLoader(_MissingViews(jobs, clean, augmented, store.key.seed),
                        batch_size=max(1, batch_size // per_photo), num_workers=workers,
                        collate_fn=_collate, prefetch_factor=4 if workers else None)
    shards = _Shards(store, shard_rows, report)
    with tqdm(total=len(jobs), desc=desc, unit="photo", disable=None if progress is None else not progress,
              leave=False) as bar:
        for batch in loader:
            good = [item for item in batch if item[0] is not None]
            for _, reason, position in (item for item in batch if item[0] is None):
                warnings.warn(f"skipping unreadable photo: {reason}", RuntimeWarning, stacklevel=2)
                report.skipped.append(Skipped(Path(samples[position].path), reason))
            bar.update(len(batch))
            if not good:
                continue
            x = torch.cat([item[0] for item in good]).to(device).contiguous(memory_format=torch.channels_last)
            with autocast(store.key.precision, device):
                out = net(x).to(store.key.dtype).cpu()
            view_of = [v for item in good for v in item[1]]
            shards.add(out, view_of, [item[2] for item in good for _ in item[1]])
            report.photos += len(good)
            report.views += len(view_of)
    shards.flush(force=True)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report
