"""A run's evidence bank: the training photos' pooled features and WebP thumbnails, and each species'
confusion partner, written into the run folder at the end of training or rebuilt later for a finished
run (`rebuild`, the `monkeysee evidence` command).

The confusion partner comes from the validation photos' calibrated probabilities (soft counts: see
`confusion_partners`): they exist whenever the run does, the model never trained on them, and the test
split, which the report's figures are measured on, is left out of it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from monkeysee.config import TrainConfig
from monkeysee.data.dataset import decoded_batches
from monkeysee.data.images import load_rgb
from monkeysee.data.layout import DataIndex, Sample
from monkeysee.data.preprocess import Preprocess
from monkeysee.data.thumbnails import pack, placeholder, thumbnail
from monkeysee.data.transforms import eval_transform
from monkeysee.errors import MonkeyseeError
from monkeysee.models import get_backbone
from monkeysee.models.calibration import Calibration
from monkeysee.models.evidence import EvidenceBank, confusion_partners
from monkeysee.models.forward import forward_pass
from monkeysee.models.unknown import softmax
from monkeysee.rundir import THUMBNAILS, LoadedRun, RunDir
from monkeysee.runtime import checked_precision
from monkeysee.train.features import Encoder
from monkeysee.train.pooled import Pooler

Log = Callable[[str], None]


def save_evidence(run: RunDir, index: DataIndex, samples: Sequence[Sample], features: np.ndarray,
                  val_probs: np.ndarray, val_targets: np.ndarray,
                  thumbs: Sequence[bytes] | None = None, workers: int = 2,
                  preprocess: Preprocess | None = None) -> EvidenceBank:
    """Write the evidence of `samples` (the training photos, in the rows of `features`) into `run`;
    their thumbnails are made from the photos unless given (decoded no larger than the model's
    `preprocess` needs, which for a JPEG skips most of the decoding)."""
    partners = confusion_partners(val_probs, val_targets, len(index.species))
    bank = EvidenceBank(features, np.array([s.target for s in samples]), partners, index.species)
    if thumbs is None:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            thumbs = list(pool.map(lambda s: _thumbnail_of(s.path, preprocess), samples))
    blob, offsets = pack(thumbs)
    run.save_evidence(bank, blob, offsets, [index.relative(s.path) for s in samples])
    return bank


def _thumbnail_of(path: Path, preprocess: Preprocess | None) -> bytes:
    try:
        return thumbnail(load_rgb(path, preprocess=preprocess))
    except MonkeyseeError:
        return placeholder()


def rebuild(run_dir: str | Path, data: str | Path | None = None, batch_size: int = 32, workers: int = 2,
            device: str = "cpu", store: str | Path | None = None, log: Log = print) -> EvidenceBank:
    """(Re)build the evidence of a finished run from its recorded splits (photos under `data` when they
    moved): one pass of the model over the training and validation photos, or, with the feature `store`
    the run trained with, their pooled features read from it (only thumbnails are made)."""
    run = RunDir(run_dir)
    loaded = run.load(device)
    index = run.read_splits(data)
    train, val = index.split("train"), index.split("val")
    thumbs: list[bytes] | None = None
    if store is not None:
        log(f"evidence: pooled features of {len(train)} training and {len(val)} validation photos, {store}")
        train_feats, val_logits, kept = _stored(run, loaded, index, Path(store), log)
        train = [train[i] for i in kept]
    else:
        log(f"evidence: {len(train)} training and {len(val)} validation photos through the model")
        train_feats, _, thumbs = _pass(loaded, train, batch_size, workers)
        _, val_logits, _ = _pass(loaded, val, batch_size, workers)
    calibration = Calibration.from_dict(loaded.manifest.calibration) if loaded.manifest.calibration \
        else Calibration()
    val_probs = softmax(calibration.apply(val_logits)) if len(val) else np.zeros((0, len(index.species)))
    bank = save_evidence(run, index, train, train_feats, val_probs,
                         np.array([s.target for s in val], dtype=np.int64), thumbs, workers,
                         loaded.manifest.preprocess)
    size = run.file(THUMBNAILS).stat().st_size
    log(f"evidence: {len(bank)} photos, {size / 1e6:.1f} MB of thumbnails in {run.path}")
    return bank


def _stored(run: RunDir, loaded: LoadedRun, index: DataIndex, store: Path,
            log: Log) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """View 0's pooled features of the training photos, the validation photos' logits, and which training
    photos the store kept, read from the run's feature store (what is missing there is computed)."""
    cfg = TrainConfig.from_recorded(run.read_config() or {})
    spec, model = get_backbone(cfg.backbone), loaded.model
    cut = len(model.body) - (cfg.unfreeze if cfg.unfreeze is not None else spec.default_unfreeze)
    device = next(model.parameters()).device
    precision = str(loaded.manifest.metrics.get("precision", "fp32"))
    splits, _ = Encoder(cfg, spec, store, precision, device).splits(model.body[:cut], cut, index, log)
    pooler = Pooler(model, model.body[cut:], precision, device)
    train, val = pooler.views(splits["train"], 1), pooler.views(splits["val"], 1)
    with torch.no_grad():
        val_logits = model.head.fc(val.to(device)).float().cpu().numpy()
    return train.numpy(), val_logits, splits["train"].indices.tolist()


def _pass(loaded: LoadedRun, samples: Sequence[Sample], batch_size: int,
          workers: int) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """Pooled features, logits and thumbnails of `samples`, each photo decoded once (unreadable photos:
    zero features, zero logits and a grey thumbnail)."""
    pre = loaded.manifest.preprocess
    transform = eval_transform(pre)
    device = next(loaded.model.parameters()).device
    precision = checked_precision("auto", device)
    feats, logits, thumbs = [], [], []
    for batch in decoded_batches([s.path for s in samples], batch_size, workers, pre):
        good = [im for _, im in batch if isinstance(im, Image.Image)]
        f = torch.zeros(len(batch), loaded.model.num_features)
        z = torch.zeros(len(batch), loaded.manifest.num_classes)
        if good:
            p = forward_pass(loaded.model, torch.stack([transform(im) for im in good]).to(device),
                             precision=precision)
            assert p.features is not None  # a Classifier always has them
            at = torch.tensor([isinstance(im, Image.Image) for _, im in batch])
            f[at], z[at] = p.features.cpu(), p.logits.cpu()
        feats.append(f)
        logits.append(z)
        thumbs += [thumbnail(im) if isinstance(im, Image.Image) else placeholder() for _, im in batch]
    empty = torch.zeros(0, loaded.model.num_features)
    return (torch.cat(feats or [empty]).numpy(), torch.cat(logits).numpy() if logits else np.zeros((0, 0)),
            thumbs)
