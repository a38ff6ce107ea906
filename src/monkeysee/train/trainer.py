"""Two-phase transfer learning (frozen body + new head, then the top stages fine-tuned at a lower
learning rate), early stopping on the validation split, and resumable runs.

The run folder's files are read and written through `monkeysee.rundir.RunDir`; what only training
needs lives in its `state/` folder: the frozen-layer cache, last/best weights, optimizer, progress.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.optim.lr_scheduler import LRScheduler, OneCycleLR
from tqdm.auto import tqdm

from monkeysee import distributed
from monkeysee.checkpoint import Manifest, atomic_save_tensors
from monkeysee.config import TrainConfig
from monkeysee.data.augment import train_transform
from monkeysee.data.layout import DataIndex, scan_dataset
from monkeysee.data.transforms import eval_transform
from monkeysee.errors import CheckpointError, ConfigError
from monkeysee.io import atomic_write_bytes, atomic_write_json
from monkeysee.models import Classifier, Head, create_model, get_backbone
from monkeysee.models.balance import class_weights
from monkeysee.models.calibration import Calibration, crossfit_threshold, fit_temperature
from monkeysee.models.fold import folded
from monkeysee.models.unknown import DetectorState, UnknownDetector, build_detector, calibrate_threshold
from monkeysee.rundir import CURVES, RunDir
from monkeysee.runtime import autocast, pick_device, resolve_precision, seed_everything
from monkeysee.train.store import FeatureStore, StoreKey, StoreSplit, encode_into

PHASES = ("head", "finetune")
POOR_KEEP = 0.99
"""A photo too poor to judge is called "not one of my species" only above the bar that keeps this share of
the degraded (augmented) views of known training photos, scored out of fold."""
POOLED_SHARD_ROWS = 4096  # pooled rows per store shard: 10 MB of Lite0's 1280 features in bf16
AUGMENT_SEED = 0
"""The augmented views of a photo are a property of the photo and the augmentation recipe, not of a
run: every run (any --seed, head or detector) over the same photos reuses them from the feature store.
The run's seed still decides the split, the order, the initial head and which view each epoch uses."""


@dataclass
class Progress:
    """What has been completed; written atomically after every epoch so a killed run can resume."""

    phase: str = "head"
    epoch: int = 0  # last completed epoch of `phase`
    best_val_loss: float = float("inf")
    best_phase: str = ""
    best_epoch: int = 0
    bad_epochs: int = 0
    done_phases: list[str] = field(default_factory=list)
    cache_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Trainer:
    """Owns one run folder. `run()` trains from scratch or from the last completed epoch."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, resuming: bool = False) -> None:
        self.cfg = cfg
        self.dir = Path(run_dir)
        self.run_dir = RunDir(self.dir)
        self.state_dir = self.run_dir.state
        self.resuming = resuming
        self.device = pick_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.spec = get_backbone(cfg.backbone)
        self.progress = Progress()

    # --- entry points -------------------------------------------------------------------------

    @classmethod
    def resume(cls, run_dir: str | Path) -> Trainer:
        recorded = RunDir(run_dir).read_config()
        if recorded is None:
            raise CheckpointError("no config.json, so nothing to resume", fix="start a new run with "
                                  "`monkeysee train --data DIR --out RUN_DIR`", path=run_dir)
        trainer = cls(TrainConfig.from_recorded(recorded), run_dir, resuming=True)
        progress = trainer.state_dir / "progress.json"
        if progress.is_file():
            trainer.progress = Progress(**json.loads(progress.read_text()))
        return trainer

    def run(self, log: Callable[[str], None] = print) -> Path:
        """Train, calibrate and save. Under torchrun every rank calls this: the photos are encoded in
        shares, the phases train with DistributedDataParallel, and rank 0 alone writes the run folder
        (the others return once the last collective is done)."""
        cfg = self.cfg
        self.device = distributed.start(self.device)
        main = distributed.is_main()
        if not main:
            log = _quiet
        if not self.resuming and self.run_dir.holds_run():
            recorded = self.run_dir.read_config() or {}
            raise ConfigError(
                f"the run folder already holds a run (trained on {recorded.get('data', 'unknown data')}); "
                "training into it would mix two runs",
                fix=f"continue that run with `monkeysee train --resume {self.dir}`, or pass a new --out",
                path=self.dir)
        had_splits = self.run_dir.has_splits()
        distributed.barrier()  # every rank has looked at the folder before rank 0 writes into it
        seed_everything(cfg.seed)
        if main:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.run_dir.write_config(cfg.to_dict())
        index = self._data_index(log, had_splits)
        model = create_model(cfg.backbone, len(index.species), pretrained=True, weights=cfg.weights,
                             dropout=cfg.dropout).to(self.device)
        unfreeze = cfg.unfreeze if cfg.unfreeze is not None else self.spec.default_unfreeze
        n_stages = len(model.body)
        if not 1 <= unfreeze <= n_stages:
            raise ConfigError(f"unfreeze must be between 1 and {n_stages} for {cfg.backbone}, not {unfreeze}")
        cut = n_stages - unfreeze
        model.freeze_body(unfreeze)
        if cfg.grow_from and not self.progress.history:
            self._start_from(model, index, log)
        caches = self._caches(model, cut, index, log)
        last = self.state_dir / "last.safetensors"
        if last.is_file():
            model.load_state_dict(load_file(str(last)))
        upper = model.body[cut:]
        with _stop_on_sigterm():
            if "head" not in self.progress.done_phases:
                self._phase_head(model, upper, caches, log)
            if "finetune" not in self.progress.done_phases and cfg.finetune_epochs > 0:
                self._phase_finetune(model, upper, caches, log)
        distributed.barrier()  # rank 0 has written best.safetensors
        model.load_state_dict(load_file(str(self.state_dir / "best.safetensors")))
        return self._finish(model, upper, caches, index, log)

    # --- data ---------------------------------------------------------------------------------

    def _data_index(self, log: Callable[[str], None], had_splits: bool) -> DataIndex:
        """The split: rank 0 draws and writes it, the other ranks read what it wrote, so every rank
        trains on the very same photos whatever the world size."""
        if had_splits:  # resuming: the very same split, even if the folder gained photos
            return self.run_dir.read_splits(self.cfg.data)
        if not distributed.is_main():
            distributed.barrier()
            return self.run_dir.read_splits(self.cfg.data)
        if not self.cfg.data:
            raise ConfigError("no data folder given", fix="pass --data DIR (see README for the layout)")
        index = scan_dataset(self.cfg.data, val_fraction=self.cfg.val_fraction,
                             test_fraction=self.cfg.test_fraction, seed=self.cfg.seed, min_species=2,
                             need_val=True)
        for w in index.warnings:
            log(f"warning: {w}")
        for s in index.skipped:
            log(f"skipped {s.path}: {s.reason}")
        log(f"data: {len(index.species)} species; {len(index.train)} train, {len(index.val)} val "
            f"({index.val_source}), {len(index.test)} held-out test photos; {len(index.skipped)} skipped")
        self.run_dir.write_splits(index)
        distributed.barrier()
        return index

    def _start_from(self, model: Classifier, index: DataIndex, log: Callable[[str], None]) -> None:
        """Growing a run: its body and the head rows of species it already knew start this one; new
        species' rows start fresh. Photos it encoded are in the feature store already."""
        assert self.cfg.grow_from is not None
        old = RunDir(self.cfg.grow_from).load(self.device)
        if old.manifest.backbone != self.cfg.backbone:
            raise ConfigError(f"--from run uses {old.manifest.backbone}, not {self.cfg.backbone}",
                              fix="grow with the same --backbone, or train a new run")
        state = {k: v for k, v in old.model.state_dict().items() if not k.startswith("head.fc.")}
        model.load_state_dict(state, strict=False)
        rows = {s.label: i for i, s in enumerate(old.manifest.species)}
        with torch.no_grad():
            for i, s in enumerate(index.species):
                if s.label in rows:
                    model.head.fc.weight[i] = old.model.head.fc.weight[rows[s.label]]
                    model.head.fc.bias[i] = old.model.head.fc.bias[rows[s.label]]
        known = sum(s.label in rows for s in index.species)
        body = ("its body is kept (--finetune-epochs N fine-tunes it)" if self.cfg.finetune_epochs == 0
                else f"its body is fine-tuned for up to {self.cfg.finetune_epochs} epochs")
        log(f"growing {self.cfg.grow_from}: {known} known species keep their head rows, "
            f"{len(index.species) - known} new; {body}")

    def store_root(self) -> Path:
        """Where the frozen-layer features live: `--store`, else a `feature-store` folder beside the run
        folder, so other runs over the same photos (another seed, head or detector) encode nothing."""
        return Path(self.cfg.store) if self.cfg.store else default_store(self.dir)

    def _caches(
        self, model: Classifier, cut: int, index: DataIndex, log: Callable[[str], None]
    ) -> dict[str, StoreSplit]:
        """Every training photo's clean and augmented views and the validation photos' clean view,
        through the frozen layers once, into the on-disk feature store; only what it lacks is encoded
        (a killed encode resumes, added photos encode alone). The test split is not encoded: training
        never looks at it (evaluate reads the photos).

        Under torchrun each rank encodes its share of the photos into shards of its own; after a barrier
        every rank re-reads the store's index and sees all of them."""
        cfg, pre = self.cfg, self.spec.preprocess
        lower = model.body[:cut].eval().to(memory_format=torch.channels_last)
        clean, aug = eval_transform(pre), train_transform(pre, cfg.augment)
        key = StoreKey.for_encoding(cfg.backbone, cut, lower, clean, aug, self.precision, AUGMENT_SEED)
        store = FeatureStore(self.store_root(), key)
        self._check_store_fits(lower, index, store)
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
        self.progress.cache_seconds = round(self.progress.cache_seconds + seconds, 3)
        for report in done:
            for s in report.skipped:
                log(f"skipped {s.path}: {s.reason}")
        encoded = int(distributed.all_reduce_sum([sum(r.photos for r in done)])[0])
        log(f"frozen layers: {encoded} photos encoded in {seconds:.1f}s "
            f"({len(index.train)} x {cfg.views + 1} train views and {len(index.val)} val photos, "
            f"the rest already in {store.root})")
        return {"train": store.split(index.train, cfg.views), "val": store.split(index.val, 0)}

    def _check_store_fits(self, lower: nn.Module, index: DataIndex, store: FeatureStore) -> None:
        """Refuse up front, with the numbers and the fix, features that would not fit on the disk."""
        size = self.spec.preprocess.input_size
        with torch.no_grad():
            per_view = lower(torch.zeros(1, 3, size, size, device=self.device)).numel()
        missing = len(store.missing(index.train, self.cfg.views)) * (self.cfg.views + 1)
        missing += len(store.missing(index.val, 0))
        # and the pooled features, at most twice (the head phase's body and the fine-tuned one)
        pooled = 2 * (len(index.train) * (self.cfg.views + 1) + len(index.val)) * self.spec.num_features
        need = (missing * per_view + pooled) * (2 if self.precision == "bf16" else 4)
        store.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(store.root).free
        if need > 0.9 * free:
            raise ConfigError(
                f"the frozen-layer features need {need / 1e9:.1f} GB but {free / 1e9:.1f} GB is free",
                fix="free space, pass --store DIR on a bigger disk, or lower --views", path=store.root)

    # --- phases -------------------------------------------------------------------------------

    def _phase_head(
        self, model: Classifier, upper: nn.Module, caches: dict[str, StoreSplit], log: Callable[[str], None]
    ) -> None:
        """Frozen body: pooled features are fixed, so they are pooled once (or read from the store, where
        this body pooled them before) and the head trains on them."""
        cfg = self.cfg
        feats = {n: self._pooled_views(model, upper, caches[n]) for n in ("train", "val")}
        views = caches["train"].views
        y_train = caches["train"].targets.repeat(views)
        head = model.head
        weights = class_weights(cfg.class_weights, caches["train"].targets, model.num_classes)
        net = distributed.data_parallel(_Trainable(head), self.device)
        opt = torch.optim.AdamW(head.parameters(), lr=cfg.head_lr, weight_decay=cfg.weight_decay)
        steps = cfg.head_epochs * -(-len(y_train) // cfg.batch_size)
        sched = one_cycle(opt, cfg.head_lr, steps, pct_start=0.1)
        self._load_optim(opt, sched, "head")

        def train_epoch(gen: torch.Generator) -> tuple[float, float]:
            head.train()
            perm = torch.randperm(len(y_train), generator=gen)
            return _fit(lambda i, rows, batch: net(feats["train"][i].to(self.device), rows, batch), y_train,
                        perm, opt, sched, cfg, weights)

        def validate() -> tuple[float, float]:
            head.eval()
            with torch.no_grad():
                logits = head.fc(feats["val"].to(self.device))
            return _score(logits, caches["val"].targets, cfg.label_smoothing)

        self._epochs("head", cfg.head_epochs, model, opt, sched, train_epoch, validate, log)

    def _phase_finetune(
        self, model: Classifier, upper: nn.Module, caches: dict[str, StoreSplit], log: Callable[[str], None]
    ) -> None:
        """Top stages + head on the cached boundary activations; one random view per photo per epoch."""
        cfg = self.cfg
        train = caches["train"]
        params = [p for p in upper.parameters() if p.requires_grad]
        groups = [{"params": params, "lr": cfg.finetune_lr},
                  {"params": list(model.head.parameters()), "lr": cfg.finetune_head_lr}]
        opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        steps = cfg.finetune_epochs * -(-len(train) // cfg.batch_size)
        sched = one_cycle(opt, [cfg.finetune_lr, cfg.finetune_head_lr], steps, pct_start=0.2)
        self._load_optim(opt, sched, "finetune")
        if self.progress.phase == "head":  # phase 2 starts from the best head of phase 1
            distributed.barrier()  # rank 0 has written it
            model.load_state_dict(load_file(str(self.state_dir / "best.safetensors")))
        trainable = _Trainable(model.head, upper)
        net = distributed.data_parallel(trainable, self.device)
        weights = class_weights(cfg.class_weights, train.targets, model.num_classes)

        def forward(acts: torch.Tensor, rows: slice | None = None, batch: int = 0,
                    through: nn.Module = net) -> torch.Tensor:
            with autocast(self.precision, self.device):
                return through(acts.to(self.device).float(), rows, batch)

        def train_epoch(gen: torch.Generator) -> tuple[float, float]:
            _train_mode(model)
            view = torch.randint(train.views, (len(train),), generator=gen)
            perm = torch.randperm(len(train), generator=gen)
            return _fit(lambda i, rows, batch: forward(train.gather(view[i], i), rows, batch), train.targets,
                        perm, opt, sched, cfg, weights)

        def validate() -> tuple[float, float]:
            """Each rank scores its block of the validation photos; the logits are gathered."""
            model.eval()
            val = caches["val"]
            block = distributed.rows_of(len(val))
            with torch.no_grad():
                parts = [forward(val.gather(0, r), through=trainable).float().cpu()
                         for r in torch.arange(block.start, block.stop).split(256)]
            local = torch.cat(parts) if parts else torch.empty(0, model.num_classes)
            return _score(distributed.gather_rows(local, len(val)), val.targets, cfg.label_smoothing)

        self._epochs("finetune", cfg.finetune_epochs, model, opt, sched, train_epoch, validate, log)

    def _epochs(
        self,
        phase: str,
        epochs: int,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        sched: LRScheduler,
        train_epoch: Callable[[torch.Generator], tuple[float, float]],
        validate: Callable[[], tuple[float, float]],
        log: Callable[[str], None],
    ) -> None:
        p = self.progress
        start = p.epoch + 1 if p.phase == phase else 1
        p.phase, p.bad_epochs = phase, (p.bad_epochs if p.phase == phase else 0)
        main = distributed.is_main()
        bar = tqdm(range(start, epochs + 1), desc=f"phase {phase}", unit="epoch",
                   disable=None if main else True, leave=False)
        for epoch in bar:
            t0 = time.perf_counter()
            # Order, views and dropout depend only on (seed, phase, epoch): resuming replays them exactly.
            salt = self.cfg.seed * 1000 + PHASES.index(phase) * 100 + epoch
            torch.manual_seed(salt)
            train_loss, train_acc = train_epoch(torch.Generator().manual_seed(salt))
            val_loss, val_acc = validate()
            row = {"phase": phase, "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                   "val_loss": val_loss, "val_acc": val_acc, "lr": opt.param_groups[0]["lr"],
                   "seconds": round(time.perf_counter() - t0, 3)}
            p.history.append(row)
            bar.set_postfix(loss=f"{train_loss:.3f}", acc=f"{train_acc:.3f}", val_acc=f"{val_acc:.3f}")
            log(f"{phase} {epoch:>2}/{epochs}: train loss {train_loss:.4f} acc {train_acc:.4f} | "
                f"val loss {val_loss:.4f} acc {val_acc:.4f} | {row['seconds']:.1f}s")
            if val_loss < p.best_val_loss - 1e-4:
                p.best_val_loss, p.best_phase, p.best_epoch, p.bad_epochs = val_loss, phase, epoch, 0
                if main:
                    atomic_save_tensors(self.state_dir / "best.safetensors", model.state_dict())
            else:
                p.bad_epochs += 1
            p.epoch = epoch
            stop = p.bad_epochs >= self.cfg.patience
            if stop or epoch == epochs:
                p.done_phases.append(phase)
            self._save_state(model, opt, sched)
            if stop:
                log(f"{phase}: early stop, no val improvement for {p.bad_epochs} epochs")
                break
        bar.close()
        if phase not in p.done_phases:  # resumed after the last epoch but before it was marked done
            p.done_phases.append(phase)
            self._save_state(model, opt, sched)

    # --- state ----------------------------------------------------------------------------------

    def _save_state(self, model: nn.Module, opt: torch.optim.Optimizer, sched: LRScheduler) -> None:
        """Weights, optimizer and progress, each atomically; progress last, so it never runs ahead.

        Rank 0 alone writes (every rank holds the same state). A SIGTERM (torchrun stopping the group
        when another rank died) waits until all three files are written, so they always agree."""
        if not distributed.is_main():
            return
        with _sigterm_deferred():
            self._write_state(model, opt, sched)

    def _write_state(self, model: nn.Module, opt: torch.optim.Optimizer, sched: LRScheduler) -> None:
        atomic_save_tensors(self.state_dir / "last.safetensors", model.state_dict())
        buf = io.BytesIO()
        torch.save({"phase": self.progress.phase, "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict()}, buf)
        atomic_write_bytes(self.state_dir / "optimizer.pt", buf.getvalue())
        atomic_write_json(self.state_dir / "progress.json", self.progress.to_dict())
        self.run_dir.write_history(self.progress.history)

    def _load_optim(self, opt: torch.optim.Optimizer, sched: LRScheduler, phase: str) -> None:
        path = self.state_dir / "optimizer.pt"
        if self.progress.phase != phase or not path.is_file():
            return
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("phase") == phase:
            opt.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])

    @torch.no_grad()
    def _pooled(self, model: Classifier, net: nn.Module, chunks: Iterable[torch.Tensor]) -> torch.Tensor:
        """The head's input for each chunk of frozen-layer activations, through `net` (the trainable
        stages as `_pooled_views` prepared them, in eval mode)."""
        out = []
        for chunk in chunks:
            with autocast(self.precision, self.device):
                out.append(model.head.pooled(net(chunk.to(self.device).float())).float().cpu())
        return torch.cat(out) if out else torch.empty(0, model.num_features)

    def _pooled_views(self, model: Classifier, upper: nn.Module, split: StoreSplit,
                      views: int | None = None) -> torch.Tensor:
        """Pooled features of views 0..views-1 (default all) of every photo, view-major: row v*N + i.

        Rows the store already holds for the body's current weights are read (a resumed run, another
        head on the same body, a grown run's old photos); the rest are pooled from the stored
        frozen-layer activations and added to it. Each rank does its block of the photos; the blocks
        are gathered, so every rank holds all rows."""
        n = split.views if views is None else views
        pooled = FeatureStore(split.store.root, split.store.key.pooled(model.body))
        block = distributed.rows_of(len(split))
        rows = torch.arange(block.start, block.stop)
        net = folded(upper) if pooled.key.folded else upper.eval()  # folded: a copy, as the key says
        return torch.cat([distributed.gather_rows(self._pooled_block(model, net, split, v, rows, pooled),
                                                  len(split))
                          for v in range(n)])

    def _pooled_block(self, model: Classifier, net: nn.Module, split: StoreSplit, view: int,
                      rows: torch.Tensor, pooled: FeatureStore) -> torch.Tensor:
        """Pooled features of `view` of the photos at `rows`: read where stored, else computed and stored."""
        contents = [split.contents[i] for i in rows.tolist()]
        have = torch.tensor([pooled.has(c, view) for c in contents], dtype=torch.bool)
        out = torch.empty(len(rows), model.num_features)
        if have.any():
            stored = [c for c, h in zip(contents, have.tolist(), strict=True) if h]
            out[have] = pooled.read(stored, view).float()
        todo = rows[~have]
        if len(todo):
            # rounded to the stored dtype, so a run that computes them equals one that reads them back
            fresh = self._pooled(model, net, (split.gather(view, r) for r in todo.split(256)))
            fresh = fresh.to(pooled.key.dtype)
            out[~have] = fresh.float()
            size, table = POOLED_SHARD_ROWS, 0 if view == 0 else 1
            for part, feats in zip(todo.split(size), fresh.split(size), strict=True):
                pooled.write(table, feats, [split.contents[i] for i in part.tolist()], [view] * len(part))
        return out

    # --- after training -----------------------------------------------------------------------

    def _finish(
        self,
        model: Classifier,
        upper: nn.Module,
        caches: dict[str, StoreSplit],
        index: DataIndex,
        log: Callable[[str], None],
    ) -> Path:
        from monkeysee.evaluate.plots import plot_training_curves

        cfg, p = self.cfg, self.progress
        model.eval()
        train_views = self._pooled_views(model, upper, caches["train"]).numpy()
        val_feats = self._pooled_views(model, upper, caches["val"], 1)
        if not distributed.is_main():  # the last collective: rank 0 calibrates and writes alone
            return self.dir
        with torch.no_grad():
            val_logits = model.head.fc(val_feats.to(self.device)).float().cpu().numpy()
        val_targets = caches["val"].targets.numpy()
        calibration = (fit_temperature(val_logits, val_targets) if cfg.calibration == "temperature"
                       else Calibration())
        detector = self._unknown_detector(train_views, caches["train"].targets.numpy(), val_logits,
                                          val_feats.numpy())
        val_row = next(r for r in p.history if r["phase"] == p.best_phase and r["epoch"] == p.best_epoch)
        manifest = Manifest(
            backbone=cfg.backbone,
            species=tuple(index.species),
            preprocess=self.spec.preprocess,
            explain_layer=self.spec.explain_layer,
            dropout=cfg.dropout,
            seed=cfg.seed,
            config=cfg.to_dict(),
            metrics={"best": {"phase": p.best_phase, "epoch": p.best_epoch, "val_loss": val_row["val_loss"],
                              "val_acc": val_row["val_acc"]}, "precision": self.precision,
                     "train_seconds": round(p.cache_seconds + sum(r["seconds"] for r in p.history), 1)},
            data_fingerprint=index.fingerprint(),
            calibration=calibration.to_dict(),
        )
        plot_training_curves(p.history, self.run_dir.file(CURVES))
        self.run_dir.save_checkpoint(model.to(memory_format=torch.contiguous_format), manifest, detector)
        log(f"best: {p.best_phase} epoch {p.best_epoch}, val acc {val_row['val_acc']:.4f}; "
            f"temperature {calibration.temperature:.3f}; unknown detector {detector.name} keeps "
            f"{cfg.unknown_keep:.0%} of known photos ({cfg.unknown_calibration} threshold)")
        return self.dir

    def _unknown_detector(self, train_views: np.ndarray, targets: np.ndarray, val_logits: np.ndarray,
                          val_feats: np.ndarray) -> UnknownDetector:
        """The "not one of my species" detector: its bank holds every cached view of the training photos
        (augmented ones included, so a blurred or dark photo of a known monkey still has neighbours),
        and its threshold keeps `unknown_keep` of clean known photos. With "crossfit" those are the
        clean training photos scored by detectors fitted on the other folds (a photo is never its own
        neighbour: all views of one photo share a fold) pooled with the validation photos, not just the
        small validation split; "val" uses the validation photos alone."""
        cfg = self.cfg
        n = len(targets)
        views = len(train_views) // n
        if cfg.unknown_calibration == "val":
            return build_detector(cfg.unknown_detector, train_views[:n], targets, val_logits, val_feats,
                                  keep=cfg.unknown_keep)
        fit = crossfit_threshold(cfg.unknown_detector, train_views, np.tile(targets, views), val_feats,
                                 val_logits, keep=cfg.unknown_keep, seed=cfg.seed,
                                 groups=np.tile(np.arange(n), views))
        clean = fit.train_scores[:n]  # view 0 of every photo; empty for detectors fitted to nothing
        threshold = calibrate_threshold(np.concatenate([clean, fit.val_scores]), cfg.unknown_keep)
        degraded = fit.train_scores[n:]  # the augmented views, out of fold: how high known photos go
        poor = calibrate_threshold(degraded, POOR_KEEP) if len(degraded) else None
        state = DetectorState.of(fit.detector)
        return UnknownDetector(cfg.unknown_detector, threshold, cfg.unknown_keep, state, poor)


# --- small pure helpers --------------------------------------------------------------------------


def default_store(run_dir: str | Path) -> Path:
    """The feature store a run uses without --store: `feature-store` beside its run folder."""
    return Path(run_dir).resolve().parent / "feature-store"


BatchForward = Callable[[torch.Tensor, slice, int], torch.Tensor]


def one_cycle(opt: torch.optim.Optimizer, max_lr: float | list[float], steps: int,
              pct_start: float) -> OneCycleLR:
    """torch's OneCycleLR, except that a warm-up of exactly one step (pct_start * steps == 1, say 10
    epochs of one batch) divides by zero in torch; that warm-up is made two steps (none, of two)."""
    if math.isclose(pct_start * steps, 1.0):
        pct_start = 2 / steps if steps > 2 else 0.25
    return OneCycleLR(opt, max_lr, total_steps=steps, pct_start=pct_start)


def _fit(
    forward: BatchForward,
    targets: torch.Tensor,
    perm: torch.Tensor,
    opt: torch.optim.Optimizer,
    sched: LRScheduler,
    cfg: TrainConfig,
    weights: torch.Tensor | None = None,
) -> tuple[float, float]:
    """One pass over `perm` in mini-batches; returns mean loss and accuracy.

    `weights` (one per class, see `models.balance`) scale each photo's loss by its species' weight, so
    the training loss reported is the weighted one; the validation loss that picks the epoch is not
    weighted (it measures the model on photos as they come).

    `forward(rows, part, batch)` gives the logits of `rows`, which are `part` of a global mini-batch of
    `batch` rows. Every rank walks the same `perm`; each takes its contiguous part of every mini-batch,
    so the steps and the data order do not depend on the world size. A rank's mean loss is weighted by
    its share of the batch times the world size: DistributedDataParallel averages the ranks' gradients,
    which then equal the gradient of the whole batch's mean loss (alone, the weight is exactly 1).
    """
    world = distributed.size()
    total_loss, correct = 0.0, 0
    for idx in perm.split(cfg.batch_size):
        part = distributed.batch_slice(len(idx))
        logits = forward(idx[part], part, len(idx)).float()
        y = targets[idx[part]].to(logits.device)
        if len(y):
            if weights is None:
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            else:
                per_photo = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing, reduction="none")
                loss = (per_photo * weights.to(logits.device)[y]).mean()
            weighted = loss * (len(y) * world / len(idx))
        else:  # more ranks than rows left: still take part in the gradient exchange, adding nothing
            loss = weighted = logits.sum() * 0.0
        opt.zero_grad(set_to_none=True)
        weighted.backward()
        opt.step()
        sched.step()
        total_loss += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
    total_loss, total_correct = distributed.all_reduce_sum([total_loss, correct])
    return total_loss / len(perm), total_correct / len(perm)


class _Trainable(nn.Module):
    """What a phase trains, as one module for DistributedDataParallel: the trainable stages (none in
    phase 1, whose inputs are pooled features already) and the head.

    Dropout is drawn for the whole global mini-batch, from the generator every rank seeded alike, and
    each rank applies its rows of it: a photo gets the same mask whatever the world size. The draw is
    the one `nn.Dropout` makes on the CPU (a Bernoulli tensor of the batch's shape, divided by 1 - p),
    so one process trains exactly as it did with `nn.Dropout`.
    """

    def __init__(self, head: Head, upper: nn.Module | None = None) -> None:
        super().__init__()
        self.head, self.upper = head, upper

    def forward(self, x: torch.Tensor, part: slice | None = None, batch: int = 0) -> torch.Tensor:
        feats = x if self.upper is None else self.head.pooled(self.upper(x))
        p = self.head.drop.p
        if self.head.drop.training and p > 0:
            rows = part if part is not None else slice(0, len(feats))
            width = (batch or len(feats), *feats.shape[1:])
            noise = torch.empty(width, dtype=feats.dtype).bernoulli_(1 - p).div_(1 - p)
            feats = feats * noise[rows].to(feats.device)
        return self.head.fc(feats)


def _score(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> tuple[float, float]:
    logits = logits.float().cpu()
    loss = F.cross_entropy(logits, targets, label_smoothing=smoothing).item()
    return loss, float((logits.argmax(1) == targets).float().mean())


def _train_mode(model: nn.Module) -> None:
    """Train mode, except BatchNorm keeps its ImageNet statistics (small data would corrupt them)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _quiet(message: str) -> None:
    """The log of ranks other than 0: one rank speaks for all."""


@contextmanager
def _sigterm_deferred() -> Iterator[None]:
    """Hold a SIGTERM back until the block is done (then it is delivered as usual)."""
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    except (AttributeError, ValueError, OSError):  # no POSIX signal masks here
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C: the last completed epoch is on disk, `--resume` continues."""
    def handler(signum: int, frame: FrameType | None) -> NoReturn:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
