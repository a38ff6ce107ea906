"""A feature store on disk: frozen-layer activations of every photo view, computed once and kept.

The frozen bottom of the body is most of the compute of CPU training. Its outputs (the activations
where the trainable stages begin) are written here in shards as they are computed, keyed by what they
depend on and nothing else:

* the photo's content (sha256 of its bytes, not its path or mtime),
* the backbone name, the cut (index of the first trainable stage), a fingerprint of the frozen weights,
  the eval transform and the precision;
* for augmented views (1..n) also the augmentation transform and the seed. Each augmented view is
  drawn from its own generator seeded by (seed, content, view), so a view never depends on batching,
  worker count, order or which other photos are encoded: a resumed or extended store equals one
  encoded in a single run.

So a second run with another head, a resumed run, or a run with photos added encodes only what is
missing; a changed photo, backbone, cut, weights, transform or seed is encoded afresh. Reading is by
positioned reads (`os.preadv`) of just the rows a mini-batch needs, straight into its buffer: the
file pages stay in the kernel's page cache, not in the process (a memory map would count every page
ever touched in its resident memory: 1.3 GB for the butterflies' 78k views), so memory does not grow
with the data set.

On disk, under `root`::

    clean-<16 hex>/                view 0 of every photo, one folder per (backbone, cut, weights, ...)
        key.json                   what the folder is keyed by, readable
        <time>-<id>.npy            a shard: (rows, C, h, w) float32, or bfloat16 stored as uint16
        <time>-<id>.rows.json      its manifest: content key and view of each row (written after it)
    aug-<16 hex>/                  views 1..n, also keyed by the augmentation and the seed

Pooled features, the head's input (`StoreKey.pooled`: the whole body with given weights, average-pooled,
rows of shape (F,)), are kept the same way in folders of their own under the same root: training reads
them wherever a body it already pooled through comes back (a resumed run, another head on the same
body, the old photos of a grown run).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, get_worker_info
from tqdm.auto import tqdm

from monkeysee.data.images import load_rgb, load_rgb_bytes
from monkeysee.data.layout import Sample, Skipped
from monkeysee.errors import ConfigError, DataError, ImageError
from monkeysee.io import atomic_write_json
from monkeysee.models.fold import folded
from monkeysee.runtime import autocast

Transform = Callable[[Image.Image], torch.Tensor]

FORMAT = 1
SHARD_ROWS = 512
"""Rows per shard: about 9.6 MB at the EfficientNet-Lite0 default cut in bf16; a kill loses at most one."""

_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
_POOLED = "body:"  # how a pooled key's weights fingerprint starts: it is of the whole body
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


# --- keys ------------------------------------------------------------------------------------------


def content_key(data: bytes) -> str:
    """The key of a photo: the first 128 bits of the sha256 of its bytes, in hex."""
    return hashlib.sha256(data).hexdigest()[:32]


def file_key(path: Path) -> str:
    with open(path, "rb") as fp:
        return hashlib.file_digest(fp, "sha256").hexdigest()[:32]


def module_fingerprint(module: nn.Module) -> str:
    """Fingerprint of a module's weights and buffers (names, shapes, dtypes and bytes)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def transform_fingerprint(transform: Callable[..., Any]) -> str:
    """Fingerprint of a transform from its repr, which for torchvision transforms lists every parameter.

    A repr with a memory address in it (a lambda, a plain function) would differ on every run and so
    never match; that is refused rather than silently re-encoding everything each time.
    """
    text = repr(transform)
    if _ADDRESS.search(text):
        raise ConfigError(
            f"cannot fingerprint transform {text[:80]!r}: its repr holds a memory address",
            fix="build it from torchvision transforms, or give it a __repr__ that lists its settings",
        )
    return _digest(text)


def _digest(obj: object) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def view_seed(seed: int, content: str, view: int) -> int:
    """The generator seed of augmented `view` of the photo whose content key is `content`."""
    return int(hashlib.sha256(f"{seed}:{content}:{view}".encode()).hexdigest()[:15], 16)


@dataclass(frozen=True)
class StoreKey:
    """Everything a stored activation depends on besides the photo and the view."""

    backbone: str
    cut: int  # index of the first trainable stage: the store holds the output of stages [0, cut)
    weights: str  # module_fingerprint of the frozen stages
    precision: str  # "fp32" or "bf16": the autocast used and the stored dtype
    clean: str  # transform_fingerprint of the eval transform (view 0)
    augment: str  # transform_fingerprint of the training transform (views 1..n); "" when none
    seed: int
    folded: bool = True  # computed with BatchNorm folded into the convolutions (models.fold): its last bits

    def __post_init__(self) -> None:
        if self.precision not in _DTYPES:
            raise ConfigError(f"store precision must be fp32 or bf16, not {self.precision!r}",
                              fix="resolve 'auto' with monkeysee.runtime.resolve_precision first")

    @classmethod
    def for_encoding(
        cls,
        backbone: str,
        cut: int,
        lower: nn.Module,
        clean: Transform,
        augmented: Transform | None,
        precision: str,
        seed: int,
    ) -> StoreKey:
        """The key of `lower` (the frozen stages [0, cut) of `backbone`) under these transforms."""
        aug = "" if augmented is None else transform_fingerprint(augmented)
        return cls(backbone, int(cut), module_fingerprint(lower), precision,
                   transform_fingerprint(clean), aug, int(seed))

    def pooled(self, body: nn.Module) -> StoreKey:
        """The key of the head's input: the output of all of `body` (its current weights), average-pooled,
        from this key's frozen-layer activations (so the cut stays part of it: it decides where the
        computation is split, and so its last bits)."""
        return replace(self, weights=f"{_POOLED}{module_fingerprint(body)}")

    def table(self, view: int) -> str:
        """Folder name of the table holding `view`: clean (0) or augmented (1..n)."""
        clean = {k: v for k, v in asdict(self).items() if k not in {"augment", "seed"}}
        if view == 0:
            return f"clean-{_digest(clean)}"
        return f"aug-{_digest(asdict(self))}"

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32


# --- the store -------------------------------------------------------------------------------------


@dataclass
class EncodeReport:
    """What one `encode_into` call did."""

    photos: int = 0  # photos with at least one view encoded
    views: int = 0  # view activations encoded
    shards: int = 0
    seconds: float = 0.0
    skipped: list[Skipped] = field(default_factory=list)  # unreadable photos and why


class FeatureStore:
    """Shards of frozen-layer activations (or pooled features) under `root`, for one `StoreKey`, read by
    positioned reads.

    Several stores (keys) can share a root; several processes may write the same store: shard names
    are unique and a row stored twice is read from the older shard.
    """

    def __init__(self, root: str | Path, key: StoreKey) -> None:
        self.root, self.key = Path(root), key
        self._dirs = {t: self.root / key.table(t) for t in (0, 1)}
        self._index: dict[tuple[str, int], tuple[int, int]] = {}  # (content, view) -> (shard, row)
        self._shards: list[Path] = []
        self._data_at: dict[int, int] = {}  # shard -> byte offset of its first row
        self._seen: set[str] = set()
        self._keys: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> content key
        self.shape: tuple[int, ...] | None = None  # (C, h, w) once anything is stored
        for table, folder in self._dirs.items():
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / "key.json").is_file():
                meta = asdict(key) if table else {k: v for k, v in asdict(key).items()
                                                  if k not in {"augment", "seed"}}
                atomic_write_json(folder / "key.json", {"format": FORMAT, **meta})
        self.refresh()

    def refresh(self) -> None:
        """Pick up shards finished since the last look (by this or another process)."""
        for folder in self._dirs.values():
            for manifest in sorted(folder.glob("*.rows.json")):
                if manifest.name not in self._seen:
                    self._seen.add(manifest.name)
                    self._add(manifest.with_name(manifest.name.replace(".rows.json", ".npy")),
                              json.loads(manifest.read_text()))

    def _add(self, shard: Path, meta: dict[str, Any]) -> None:
        if meta.get("format") != FORMAT or not shard.is_file():
            warnings.warn(f"{shard}: shard missing or of another format, ignored", RuntimeWarning,
                          stacklevel=3)
            return
        shape = tuple(meta["shape"])
        if self.shape is None:
            self.shape = shape
        elif shape != self.shape:
            raise DataError(f"shard rows have shape {shape}, others {self.shape}",
                            fix="delete this store folder; it will be encoded again", path=shard)
        number = len(self._shards)
        self._shards.append(shard)
        for row, (content, view) in enumerate(zip(meta["contents"], meta["views"], strict=True)):
            self._index.setdefault((content, view), (number, row))

    def __len__(self) -> int:
        """Number of stored view activations."""
        return len(self._index)

    def has(self, content: str, view: int) -> bool:
        return (content, view) in self._index

    def content_keys(self, samples: Sequence[Sample], threads: int = 4) -> list[str | None]:
        """Content key of each sample's file (None where it cannot be read); hashed in threads."""

        def one(sample: Sample) -> str | None:
            try:
                st = os.stat(sample.path)
                memo = (str(sample.path), st.st_size, st.st_mtime_ns)
                if memo not in self._keys:
                    self._keys[memo] = file_key(sample.path)
                return self._keys[memo]
            except OSError:
                return None

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, samples))

    def missing(self, samples: Sequence[Sample], views: int) -> list[int]:
        """Positions of the samples lacking view 0 or any of views 1..`views` (unreadable ones too)."""
        keys = self.content_keys(samples)
        return [i for i, c in enumerate(keys)
                if c is None or any(not self.has(c, v) for v in range(views + 1))]

    def write(self, table: int, acts: torch.Tensor, contents: Sequence[str], views: Sequence[int]) -> None:
        """Write one shard of rows to `table` (0 clean, 1 augmented) atomically, then its manifest.

        The shard goes to a temporary name, is fsynced and renamed; the manifest follows the same way,
        so a manifest always names a complete shard and a kill leaves at most a stray temporary file.
        """
        if not len(contents) == len(views) == len(acts):
            raise ValueError("acts, contents and views must have one entry per row")
        folder = self._dirs[0 if table == 0 else 1]
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        acts = acts.detach().cpu().to(self.key.dtype).contiguous()
        array = acts.view(torch.uint16).numpy() if acts.dtype == torch.bfloat16 else acts.numpy()
        final, tmp = folder / f"{name}.npy", folder / f".{name}.npy.tmp"
        try:
            with open(tmp, "wb") as fp:
                np.save(fp, array)
                fp.flush()
                os.fsync(fp.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        meta = {"format": FORMAT, "dtype": _DTYPES[self.key.precision], "shape": list(acts.shape[1:]),
                "contents": list(contents), "views": [int(v) for v in views]}
        atomic_write_json(folder / f"{name}.rows.json", meta)
        self._seen.add(f"{name}.rows.json")
        self._add(final, meta)

    @property
    def _stored(self) -> np.dtype:
        """The dtype of the shards' bytes: float32, or bfloat16 kept as uint16 (numpy has no bf16)."""
        return np.dtype(np.uint16 if self.key.precision == "bf16" else np.float32)

    def _data_offset(self, number: int, fp: BinaryIO) -> int:
        """Byte offset of row 0 in shard `number` (after its .npy header), read once."""
        if number not in self._data_at:
            fp.seek(0)
            fmt = np.lib.format
            version = fmt.read_magic(fp)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read_header(fp)
            if fortran or tuple(shape[1:]) != self.shape or dtype != self._stored:
                raise DataError(f"a store shard holds {dtype} rows of shape {tuple(shape[1:])}, not the "
                                f"{self._stored} rows of shape {self.shape} its manifest names",
                                fix="delete the store folder and rerun", path=self._shards[number])
            self._data_at[number] = fp.tell()
        return self._data_at[number]

    def read(self, contents: Sequence[str], views: Sequence[int] | int) -> torch.Tensor:
        """Activations (len(contents), C, h, w) of the given (content, view) pairs, in that order."""
        views = [views] * len(contents) if isinstance(views, int) else views
        try:
            locs = np.array([self._index[c, int(v)] for c, v in zip(contents, views, strict=True)],
                            dtype=np.int64).reshape(-1, 2)
        except KeyError as exc:
            raise DataError(f"no stored activation for photo {exc.args[0][0]} view {exc.args[0][1]}",
                            fix="run encode_into for these samples first", path=self.root) from None
        return self._gather(locs[:, 0], locs[:, 1])

    def _gather(self, shards: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        if self.shape is None:
            raise DataError("the store is empty", fix="run encode_into first", path=self.root)
        out = np.empty((len(rows), *self.shape), dtype=self._stored)
        size = out.itemsize * int(np.prod(self.shape))
        flat = out.view(np.uint8).reshape(len(rows), size)  # one byte row per activation
        for s in np.unique(shards):
            at = np.flatnonzero(shards == s)
            with open(self._shards[int(s)], "rb", buffering=0) as fp:
                start = self._data_offset(int(s), fp)
                for j in at.tolist():
                    if _read_at(fp, flat[j], start + int(rows[j]) * size) != size:
                        raise DataError("a store shard is shorter than its manifest says",
                                        fix="delete the store and rerun", path=self._shards[int(s)])
        t = torch.from_numpy(out)
        return t.view(torch.bfloat16) if self.key.precision == "bf16" else t

    def split(self, samples: Sequence[Sample], views: int) -> StoreSplit:
        """The stored views 0..`views` of `samples` as a lazily read (views + 1, N, C, h, w) table.

        Samples without every view (unreadable photos) are left out; `indices` says which remain.
        """
        keys = self.content_keys(samples)
        kept = [i for i, c in enumerate(keys)
                if c is not None and all(self.has(c, v) for v in range(views + 1))]
        locs = np.zeros((views + 1, len(kept), 2), dtype=np.int64)
        for n, i in enumerate(kept):
            for v in range(views + 1):
                locs[v, n] = self._index[keys[i], v]  # type: ignore[index]
        targets = torch.tensor([samples[i].target for i in kept], dtype=torch.long)
        contents = [str(keys[i]) for i in kept]
        return StoreSplit(self, locs, targets, torch.tensor(kept, dtype=torch.long), contents)


@dataclass(frozen=True)
class StoredTable:
    """One table folder of a store, as `describe_store` finds it on disk."""

    folder: str
    what: str  # "frozen layers" or "pooled features"
    views: str  # "clean" or "augmented"
    key: dict[str, Any]
    rows: int
    bytes: int


def describe_store(root: str | Path) -> list[StoredTable]:
    """Every table folder under `root`: what it holds, what it is keyed by, its rows and bytes on disk.

    Deleting a folder is always safe: whatever a later run needs from it is computed again."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("feature store not found", fix="pass the folder given as --store (default: "
                        "feature-store/ beside the run folders)", path=root)
    tables = []
    for folder in sorted(p for p in root.iterdir() if (p / "key.json").is_file()):
        key = json.loads((folder / "key.json").read_text())
        rows = sum(len(json.loads(m.read_text())["contents"]) for m in folder.glob("*.rows.json"))
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        what = "pooled features" if str(key.get("weights", "")).startswith(_POOLED) else "frozen layers"
        views = "clean" if folder.name.startswith("clean-") else "augmented"
        tables.append(StoredTable(folder.name, what, views, key, rows, size))
    return tables


def _read_at(fp: BinaryIO, into: np.ndarray, offset: int) -> int:
    """Read len(into) bytes at `offset` straight into `into`: one pread where the OS has it."""
    buffer = memoryview(into)  # type: ignore[arg-type]  # a contiguous uint8 row: a writable buffer
    if hasattr(os, "preadv"):
        return os.preadv(fp.fileno(), [buffer], offset)
    fp.seek(offset)  # Windows: no positioned reads, but the file object is this thread's own
    return fp.readinto(buffer) or 0  # type: ignore[attr-defined]


class StoreSplit:
    """Activations of one split, (views, N, C, h, w), read from the store's shards on demand.

    It replaces `SplitCache.acts` without holding it: `gather` copies just a mini-batch, `chunks`
    streams one view in order. `targets` and `indices` mean what they mean in `SplitCache`.
    """

    def __init__(self, store: FeatureStore, locs: np.ndarray, targets: torch.Tensor,
                 indices: torch.Tensor, contents: list[str]) -> None:
        self._store, self._locs = store, locs
        self.targets, self.indices = targets, indices
        self.contents = contents  # each photo's content key, in row order

    @property
    def store(self) -> FeatureStore:
        """The store the rows are read from."""
        return self._store

    def __len__(self) -> int:
        return int(self.targets.numel())

    @property
    def views(self) -> int:
        """Number of views per photo, the clean one included."""
        return int(self._locs.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.views, len(self), *(self._store.shape or ()))

    def gather(self, view: torch.Tensor | int, rows: torch.Tensor) -> torch.Tensor:
        """Activations (len(rows), C, h, w): view `view[j]` (or one view for all) of photo `rows[j]`.

        The drop-in for `cache.acts[view[i], i]`; rows are positions in this split (0..N-1).
        """
        r = rows.numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
        v = view.numpy() if isinstance(view, torch.Tensor) else np.full(len(r), int(view))
        loc = self._locs[v, r]
        return self._store._gather(loc[:, 0], loc[:, 1])

    def chunks(self, view: int, size: int = 256) -> Iterator[torch.Tensor]:
        """View `view` of every photo, in order, `size` photos at a time."""
        for start in range(0, len(self), size):
            yield self.gather(view, torch.arange(start, min(start + size, len(self))))

    def load(self, view: int = 0) -> torch.Tensor:
        """View `view` of every photo in memory, (N, C, h, w): for small splits (val, test clean views)."""
        if len(self) == 0:
            return torch.empty(0, *(self._store.shape or ()), dtype=self._store.key.dtype)
        return torch.cat(list(self.chunks(view, size=4096)))


# --- encoding --------------------------------------------------------------------------------------


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


@torch.inference_mode()
def encode_into(
    store: FeatureStore,
    lower: nn.Module,
    samples: Sequence[Sample],
    clean: Transform,
    augmented: Transform | None,
    views: int,
    *,
    batch_size: int = 64,
    workers: int = 0,
    device: torch.device | str = "cpu",
    progress: bool | None = None,
    desc: str = "frozen layers",
    shard_rows: int = SHARD_ROWS,
) -> EncodeReport:
    """Encode view 0 (clean) and views 1..`views` (augmented) of every sample the store lacks.

    Shards are written as they fill, so a kill keeps every finished shard and a rerun encodes only
    the rest. `lower` must be the frozen stages `store.key` was made for (eval mode, not checked
    beyond the weights fingerprint); precision and seed come from the key. `batch_size` counts
    images (views), not photos. `progress=None` shows a bar only on a terminal.
    """
    if views > 0 and augmented is None:
        raise ConfigError(f"{views} augmented view(s) asked for but no augmented transform given",
                          fix="pass the training transform, or views=0")
    if module_fingerprint(lower) != store.key.weights:
        raise ConfigError("these frozen layers are not the ones the store key was made for",
                          fix="build the key with StoreKey.for_encoding from this module")
    t0 = time.perf_counter()
    keys = store.content_keys(samples)
    jobs, scheduled = [], set()
    for i, (sample, c) in enumerate(zip(samples, keys, strict=True)):
        need = tuple(v for v in range(views + 1) if c is None or not store.has(c, v))
        if need and (c is None or c not in scheduled):  # a duplicate photo is encoded once
            jobs.append(_Job(i, Path(sample.path), need))
            scheduled.add(c)
    report = EncodeReport()
    if not jobs:
        return report
    device = torch.device(device)
    net = folded(lower) if store.key.folded else lower
    per_photo = max(len(j.views) for j in jobs)
    loader = DataLoader(_MissingViews(jobs, clean, augmented, store.key.seed),
                        batch_size=max(1, batch_size // per_photo), num_workers=workers,
                        collate_fn=_collate, prefetch_factor=4 if workers else None)
    pending: dict[int, list[tuple[torch.Tensor, list[str], list[int]]]] = {0: [], 1: []}

    def flush(force: bool) -> None:
        """Write both tables once enough rows wait, so a photo's views land in the store together."""
        if not force and sum(len(c) for t in pending.values() for _, c, _ in t) < shard_rows:
            return
        for table, parts in pending.items():
            if parts:
                store.write(table, torch.cat([a for a, _, _ in parts]), [c for _, cs, _ in parts for c in cs],
                            [v for _, _, vs in parts for v in vs])
                report.shards += 1
            pending[table] = []

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
            content_of = [item[2] for item in good for _ in item[1]]
            for table in (0, 1):
                at = [j for j, v in enumerate(view_of) if (v == 0) == (table == 0)]
                if at:
                    pending[table].append((out[at], [content_of[j] for j in at], [view_of[j] for j in at]))
            flush(force=False)
            report.photos += len(good)
            report.views += len(view_of)
    flush(force=True)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report
