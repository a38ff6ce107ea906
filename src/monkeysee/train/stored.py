"""A finished run's pooled features, read back from its feature store: training left every training
photo's clean view pooled through the final body there (`Pooler.views` before fitting the detector),
keyed by that body's weights, so a map or a neighbour search of the run needs no second pass."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from monkeysee.config import TrainConfig
from monkeysee.data.augment import train_transform
from monkeysee.data.layout import Sample
from monkeysee.data.transforms import eval_transform
from monkeysee.models import get_backbone
from monkeysee.rundir import LoadedRun, RunDir
from monkeysee.train.features import AUGMENT_SEED
from monkeysee.train.keys import StoreKey, transform_fingerprint
from monkeysee.train.store import FeatureStore
from monkeysee.train.trainer import default_store


def run_store_root(run_dir: str | Path) -> Path:
    """The feature store a run trained with: its `--store`, else the default beside the run folder."""
    recorded = RunDir(run_dir).read_config() or {}
    return Path(recorded["store"]) if recorded.get("store") else default_store(run_dir)


def stored_pooled(run: LoadedRun, samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features (float32, one row per sample) of the clean view of `samples` that the run's store
    holds for the run's trained body, and a mask of the rows found; rows not found are zeros. A run
    whose store is gone, or whose body never pooled these photos, finds none."""
    out = np.zeros((len(samples), run.model.num_features), dtype=np.float32)
    found = np.zeros(len(samples), dtype=bool)
    root = run_store_root(run.directory)
    recorded = RunDir(run.directory).read_config()
    if not root.is_dir() or recorded is None or not samples:
        return out, found
    cfg = TrainConfig.from_recorded(recorded)
    spec = get_backbone(run.manifest.backbone)
    unfreeze = cfg.unfreeze if cfg.unfreeze is not None else spec.default_unfreeze
    precision = str(run.manifest.metrics.get("precision", "fp32"))
    pre = run.manifest.preprocess
    augment = transform_fingerprint(train_transform(pre, cfg.augment))
    # a pooled key's weights are the whole body's, so the frozen stages' print is not needed
    base = StoreKey(run.manifest.backbone, len(run.model.body) - unfreeze, "", precision,
                    transform_fingerprint(eval_transform(pre)), augment, AUGMENT_SEED)
    key = base.pooled(run.model.body)
    if not all((root / key.folder(view)).is_dir() for view in (0, 1)):
        return out, found  # never pooled here (opening the store would add empty tables)
    store = FeatureStore(root, key)
    keys = store.content_keys(samples)
    rows = [i for i, k in enumerate(keys) if k is not None and store.has(k, 0)]
    if rows:
        feats = store.read([str(keys[i]) for i in rows], 0)
        out[rows] = feats.to(torch.float32).numpy()
        found[rows] = True
    return out, found
