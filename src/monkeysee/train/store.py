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

import json
import os
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from monkeysee.data.layout import Sample
from monkeysee.errors import DataError
from monkeysee.io import atomic_write_json
from monkeysee.train.keys import DTYPES, POOLED, StoreKey, file_key

FORMAT = 1
SHARD_ROWS = 512
"""Rows per shard: about 9.6 MB at the EfficientNet-Lite0 default cut in bf16; a kill loses at most one."""


# --- the store -------------------------------------------------------------------------------------


class FeatureStore:
    """Shards of frozen-layer activations (or pooled features) under `root`, for one `StoreKey`, read by
    positioned reads.

    Several stores (keys) can share a root; several processes may write the same store: shard names
    are unique and a row stored twice is read from the older shard.
    """

    def __init__(self, root: str | Path, key: StoreKey) -> None:
        self.root, self.key = Path(root), key
        self._dirs = {augmented: self.root / key.folder(int(augmented)) for augmented in (False, True)}
        self._index: dict[tuple[str, int], tuple[int, int]] = {}  # (content, view) -> (shard, row)
        self._shards: list[Path] = []
        self._data_at: dict[int, int] = {}  # shard -> byte offset of its first row
        self._seen: set[str] = set()
        self._keys: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> content key
        self.shape: tuple[int, ...] | None = None  # (C, h, w) once anything is stored
        for augmented, folder in self._dirs.items():
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / "key.json").is_file():
                atomic_write_json(folder / "key.json", {"format": FORMAT, **key.fields_of(int(augmented))})
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

    def missing(self, samples: Sequence[Sample], augmented_views: int) -> list[int]:
        """Positions of the samples lacking view 0 or any of views 1..`augmented_views` (unreadable ones
        too)."""
        keys = self.content_keys(samples)
        return [i for i, c in enumerate(keys)
                if c is None or any(not self.has(c, v) for v in range(augmented_views + 1))]

    def write(self, acts: torch.Tensor, contents: Sequence[str], views: Sequence[int]) -> None:
        """Write one shard of rows atomically, then its manifest, into the table of its views: the clean
        one (all views 0) or the augmented one (all views 1..n).

        The shard goes to a temporary name, is fsynced and renamed; the manifest follows the same way,
        so a manifest always names a complete shard and a kill leaves at most a stray temporary file.
        """
        if not len(contents) == len(views) == len(acts):
            raise ValueError("acts, contents and views must have one entry per row")
        augmented = {int(v) > 0 for v in views}
        if len(augmented) > 1:
            raise ValueError("a shard holds clean views (0) or augmented ones (1..n), not both")
        folder = self._dirs[augmented.pop() if augmented else False]
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
        meta = {"format": FORMAT, "dtype": DTYPES[self.key.precision], "shape": list(acts.shape[1:]),
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
        return self.read_at(locs[:, 0], locs[:, 1])

    def read_at(self, shards: np.ndarray, rows: np.ndarray) -> torch.Tensor:
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
                    if _pread_into(fp, flat[j], start + int(rows[j]) * size) != size:
                        raise DataError("a store shard is shorter than its manifest says",
                                        fix="delete the store and rerun", path=self._shards[int(s)])
        t = torch.from_numpy(out)
        return t.view(torch.bfloat16) if self.key.precision == "bf16" else t

    def split(self, samples: Sequence[Sample], augmented_views: int) -> StoreSplit:
        """The stored views 0..`augmented_views` of `samples` as a lazily read (view_count, N, C, h, w)
        table, where view_count = augmented_views + 1.

        Samples without every view (unreadable photos) are left out; `indices` says which remain.
        """
        keys = self.content_keys(samples)
        count = augmented_views + 1
        kept = [i for i, c in enumerate(keys) if c is not None and all(self.has(c, v) for v in range(count))]
        locs = np.zeros((count, len(kept), 2), dtype=np.int64)
        for n, i in enumerate(kept):
            for v in range(count):
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
        what = "pooled features" if str(key.get("weights", "")).startswith(POOLED) else "frozen layers"
        views = "clean" if folder.name.startswith("clean-") else "augmented"
        tables.append(StoredTable(folder.name, what, views, key, rows, size))
    return tables


def _pread_into(fp: BinaryIO, into: np.ndarray, offset: int) -> int:
    """Read len(into) bytes at `offset` straight into `into`: one pread where the OS has it."""
    buffer = memoryview(into)  # type: ignore[arg-type]  # a contiguous uint8 row: a writable buffer
    if hasattr(os, "preadv"):
        return os.preadv(fp.fileno(), [buffer], offset)
    fp.seek(offset)  # Windows: no positioned reads, but the file object is this thread's own
    return fp.readinto(buffer) or 0  # type: ignore[attr-defined]


class StoreSplit:
    """Activations of one split, (view_count, N, C, h, w), read from the store's shards on demand:
    `gather` copies just a mini-batch, `chunks` streams one view in order. `targets` holds each kept
    photo's class, `indices` its position in the samples the split was made from.
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
    def view_count(self) -> int:
        """Number of views per photo, the clean one included."""
        return int(self._locs.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.view_count, len(self), *(self._store.shape or ()))

    def gather(self, view: torch.Tensor | int, rows: torch.Tensor) -> torch.Tensor:
        """Activations (len(rows), C, h, w): view `view[j]` (or one view for all) of photo `rows[j]`;
        rows are positions in this split (0..N-1)."""
        r = rows.numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
        v = view.numpy() if isinstance(view, torch.Tensor) else np.full(len(r), int(view))
        loc = self._locs[v, r]
        return self._store.read_at(loc[:, 0], loc[:, 1])

    def chunks(self, view: int, size: int = 256) -> Iterator[torch.Tensor]:
        """View `view` of every photo, in order, `size` photos at a time."""
        for start in range(0, len(self), size):
            yield self.gather(view, torch.arange(start, min(start + size, len(self))))

    def load(self, view: int = 0) -> torch.Tensor:
        """View `view` of every photo in memory, (N, C, h, w): for small splits (val, test clean views)."""
        if len(self) == 0:
            return torch.empty(0, *(self._store.shape or ()), dtype=self._store.key.dtype)
        return torch.cat(list(self.chunks(view, size=4096)))
