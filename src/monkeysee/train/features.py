"""The frozen layers' features of a run's photos: every training photo's clean and augmented views and
the validation photos' clean view, encoded into the feature store (only what it lacks), after checking
that they fit on the disk. The test split is not encoded: training never looks at it."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monkeysee import distributed
from monkeysee.config import TrainConfig
from monkeysee.data.augment import train_transform
from monkeysee.data.layout import DataIndex
from monkeysee.data.transforms import eval_transform
from monkeysee.errors import ConfigError
from monkeysee.models import BackboneSpec
from monkeysee.train.encode import encode_into
from monkeysee.train.keys import StoreKey
from monkeysee.train.store import FeatureStore, StoreSplit

AUGMENT_SEED = 0
"""The augmented views of a photo are a property of the photo and the augmentation recipe, not of a
run: every run (any --seed, head or detector) over the same photos reuses them from the feature store.
The run's seed still decides the split, the order, the initial head and which view each epoch uses."""


@dataclass(frozen=True)
class Encoder:
    """Encodes a run's photos through the frozen stages [0, cut) of its model into the store at `root`."""

    cfg: TrainConfig
    spec: BackboneSpec
    root: Path
    precision: str
    device: torch.device

    def splits(self, lower: nn.Module, cut: int, index: DataIndex, log: Callable[[str], None]
               ) -> tuple[dict[str, StoreSplit], float]:
        """The stored train and val splits, and the seconds spent encoding. A killed encode resumes,
        added photos encode alone. Under torchrun each rank encodes its share of the photos into shards
        of its own; after a barrier every rank re-reads the store's index and sees all of them."""
        cfg, pre = self.cfg, self.spec.preprocess
        lower = lower.eval().to(memory_format=torch.channels_last)
        clean, aug = eval_transform(pre), train_transform(pre, cfg.augment)
        key = StoreKey.for_encoding(cfg.backbone, cut, lower, clean, aug, self.precision, AUGMENT_SEED)
        store = FeatureStore(self.root, key)
        self._check_fits(lower, index, store)
        t0 = time.perf_counter()
        common: dict[str, Any] = dict(batch_size=cfg.batch_size, workers=cfg.workers, device=self.device)
        if not distributed.is_main():
            common["progress"] = False
        share = distributed.share
        done = [encode_into(store, lower, share(index.train), clean, aug, cfg.views,
                            desc="frozen layers: train", **common),
                encode_into(store, lower, share(index.val), clean, None, 0, desc="frozen layers: val",
                            **common)]
        distributed.barrier()  # every share's shards are written
        store.refresh()
        seconds = time.perf_counter() - t0
        for report in done:
            for s in report.skipped:
                log(f"skipped {s.path}: {s.reason}")
        encoded = int(distributed.all_reduce_sum([sum(r.photos for r in done)])[0])
        log(f"frozen layers: {encoded} photos encoded in {seconds:.1f}s "
            f"({len(index.train)} x {cfg.views + 1} train views and {len(index.val)} val photos, "
            f"the rest already in {store.root})")
        return {"train": store.split(index.train, cfg.views), "val": store.split(index.val, 0)}, seconds

    def _check_fits(self, lower: nn.Module, index: DataIndex, store: FeatureStore) -> None:
        """Refuse up front, with the numbers and the fix, features that would not fit on the disk."""
        size, views = self.spec.preprocess.input_size, self.cfg.views
        with torch.no_grad():
            per_view = lower(torch.zeros(1, 3, size, size, device=self.device)).numel()
        missing = len(store.missing(index.train, views)) * (views + 1)
        missing += len(store.missing(index.val, 0))
        # and the pooled features, at most twice (the head phase's body and the fine-tuned one)
        pooled = 2 * (len(index.train) * (views + 1) + len(index.val)) * self.spec.num_features
        need = (missing * per_view + pooled) * (2 if self.precision == "bf16" else 4)
        store.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(store.root).free
        if need > 0.9 * free:
            raise ConfigError(
                f"the frozen-layer features need {need / 1e9:.1f} GB but {free / 1e9:.1f} GB is free",
                fix="free space, pass --store DIR on a bigger disk, or lower --views", path=store.root)
