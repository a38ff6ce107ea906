"""Two-phase transfer learning (frozen body + new head, then the top stages fine-tuned at a lower
learning rate), early stopping on the validation split, and resumable runs.

The run folder's files, the resume state among them, are read and written through
`monkeysee.rundir.RunDir`; the frozen layers' features live in the feature store (`train.store`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from monkeysee import distributed
from monkeysee.checkpoint import Manifest
from monkeysee.config import TrainConfig
from monkeysee.data.layout import DataIndex, scan_dataset
from monkeysee.data.taxonomy import Taxonomy, resolve_taxonomy
from monkeysee.errors import CheckpointError, ConfigError
from monkeysee.models import Classifier, create_model, get_backbone
from monkeysee.models.unknown import DETECTORS, softmax
from monkeysee.rundir import CONFIG, CURVES, RunDir
from monkeysee.runtime import pick_device, resolve_precision, seed_everything
from monkeysee.train import answers, finish
from monkeysee.train.evidence import save_evidence
from monkeysee.train.features import Encoder
from monkeysee.train.loop import BestCheckpoint, EarlyStopping, Loop, Phase, Progress, ProgressLog
from monkeysee.train.phases import FinetunePhase, HeadPhase
from monkeysee.train.pooled import Pooler
from monkeysee.train.signals import sigterm_deferred, stop_on_sigterm
from monkeysee.train.store import StoreSplit

Log = Callable[[str], None]


class Trainer:
    """Owns one run folder. `run()` trains from scratch or from the last completed epoch.

    `cfg` is the resolved config (see `monkeysee.config`): the device and everything else come from it."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, resuming: bool = False) -> None:
        self.cfg = cfg
        self.dir = Path(run_dir)
        self.run_dir = RunDir(self.dir)
        self.state = self.run_dir.state
        self.resuming = resuming
        self.device = pick_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.spec = get_backbone(cfg.backbone)
        self.progress = Progress()

    # --- entry points -------------------------------------------------------------------------

    @staticmethod
    def recorded(run_dir: str | Path) -> dict[str, Any]:
        """The config a run folder recorded, as written; a CheckpointError where there is none."""
        recorded = RunDir(run_dir).read_config()
        if recorded is None:
            raise CheckpointError(f"no {CONFIG}, so nothing to resume", fix="start a new run with "
                                  "`monkeysee train --data DIR --out RUN_DIR`", path=run_dir)
        return recorded

    @classmethod
    def resume(cls, run_dir: str | Path, cfg: TrainConfig | None = None) -> Trainer:
        """The trainer that continues the run in `run_dir` with `cfg`, the config resolved for it
        (`monkeysee.config.resumed`); by default the config it recorded."""
        cfg = cfg or TrainConfig.from_recorded(cls.recorded(run_dir))
        trainer = cls(cfg, run_dir, resuming=True)
        saved = trainer.state.read_progress()
        if saved is not None:
            trainer.progress = Progress(**saved)
        return trainer

    def run(self, log: Log = print) -> Path:
        """Train, calibrate and save. Under torchrun every rank calls this: the photos are encoded in
        shares, the phases train with DistributedDataParallel, and rank 0 alone writes the run folder
        (the others return once the last collective is done).

        A fresh start that fails before its first epoch is saved removes what it wrote, so the same
        command can run again."""
        self.device = distributed.start(self.device)
        if not distributed.is_main():
            log = _quiet
        if self.dir.exists() and not self.dir.is_dir():
            raise ConfigError("the run folder names an existing file", fix="pass --out NEW_FOLDER",
                              path=self.dir)
        if not self.resuming and self.run_dir.holds_run():
            recorded = self.run_dir.read_config() or {}
            raise ConfigError(
                f"the run folder already holds a run (trained on {recorded.get('data', 'unknown data')}); "
                "training into it would mix two runs",
                fix=f"continue that run with `monkeysee train --resume {self.dir}`, or pass a new --out",
                path=self.dir)
        created = not self.dir.exists()
        try:
            return self._run(log)
        except Exception:
            if distributed.is_main() and not self.resuming and self.state.read_progress() is None:
                self.run_dir.discard_start(created)
            raise

    def _run(self, log: Log) -> Path:
        cfg = self.cfg
        had_splits = self.run_dir.has_splits()
        distributed.barrier()  # every rank has looked at the folder before rank 0 writes into it
        seed_everything(cfg.seed)
        index = self._data_index(log, had_splits)
        taxonomy = self._taxonomy(index, log)
        model = create_model(cfg.backbone, len(index.species), pretrained=True, weights=cfg.weights,
                             dropout=cfg.dropout).to(self.device)
        cut = self._freeze(model)
        if cfg.grow_from and not self.progress.history:
            self._start_from(model, index, log)
        splits = self.encode(model, cut, index, log)
        last = self.state.last_weights()
        if last is not None:
            model.load_state_dict(last)
        upper = model.body[cut:]
        pooler = Pooler(model, upper, self.precision, self.device)
        loop = self._loop(validated=len(splits["val"]) > 0, log=log)
        with stop_on_sigterm():
            if "head" not in self.progress.done_phases:
                self._train_head(loop, model, pooler, splits)
            if "finetune" not in self.progress.done_phases and cfg.finetune_epochs > 0:
                if self.progress.phase == "head":  # phase 2 starts from the best head of phase 1
                    distributed.barrier()  # rank 0 has written it
                    model.load_state_dict(self.state.best_weights())
                loop.run(self._resumed(FinetunePhase(cfg, model, upper, splits, self.device, self.precision)))
        distributed.barrier()  # rank 0 has written the best weights
        model.load_state_dict(self.state.best_weights())
        return self._finish(model, pooler, splits, index, taxonomy, log)

    def _train_head(self, loop: Loop, model: Classifier, pooler: Pooler,
                    splits: dict[str, StoreSplit]) -> None:
        """Phase 1 on the pooled features of every view, which are as large as the training set's views
        and are let go when the phase ends (the rest of the run never needs them again)."""
        feats = {n: pooler.views(splits[n]) for n in ("train", "val")}
        loop.run(self._resumed(HeadPhase(self.cfg, model, feats, splits, self.device)))

    # --- data ---------------------------------------------------------------------------------

    def _data_index(self, log: Log, had_splits: bool) -> DataIndex:
        """The split: rank 0 draws it, checks what the config asks of it, and writes it with the config;
        the other ranks read what it wrote, so every rank trains on the very same photos whatever the
        world size."""
        if had_splits:  # resuming: the very same split, even if the folder gained photos
            index = self.run_dir.read_splits(self.cfg.data)
            if not index.val:  # a resumed run may ask for another detector or calibration
                self._check_without_validation(log)
            self._write_config()
            return index
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
        if not index.val:
            self._check_without_validation(log)
        self._write_config()
        self.run_dir.write_splits(index)
        distributed.barrier()
        return index

    def _taxonomy(self, index: DataIndex, log: Log) -> Taxonomy | None:
        """The ranks above species, checked against the species before any photo is encoded."""
        taxonomy = resolve_taxonomy(index.species, self.cfg.taxonomy)
        if taxonomy is None:
            log("taxonomy: none (the species have no Latin names and no --taxonomy file was given)")
        else:
            counts = ", ".join(f"{len(taxonomy.members(r))} {r} taxa" for r in taxonomy.ranks)
            log(f"taxonomy: {counts} ({taxonomy.source})")
        return taxonomy

    def _write_config(self) -> None:
        if distributed.is_main():
            self.dir.mkdir(parents=True, exist_ok=True)
            self.run_dir.write_config(self.cfg.to_dict())

    def _check_without_validation(self, log: Log) -> None:
        """No species has photos to spare for validation: training keeps the last epoch, shown
        probabilities stay uncalibrated, and the unknown threshold needs a detector that is calibrated
        on training photos out of fold."""
        cfg = self.cfg
        if cfg.unknown_calibration == "val" or not DETECTORS.get(cfg.unknown_detector).needs_fit:
            raise ConfigError(
                f"no species has a photo to spare for validation, and the {cfg.unknown_detector} unknown "
                f"detector with {cfg.unknown_calibration} calibration is calibrated on validation photos",
                fix="pass --unknown-detector knn (or mahalanobis) with --unknown-calibration crossfit, or "
                    "add photos (three per species leave one for validation), or DIR/validation/<species>/")
        log("warning: no validation photos, so there is no early stopping (the last epoch is kept) and "
            "shown probabilities are not temperature-calibrated")

    def _freeze(self, model: Classifier) -> int:
        """Freeze all but the top `unfreeze` stages of the body; the index of the first trainable one."""
        unfreeze = self.cfg.unfreeze if self.cfg.unfreeze is not None else self.spec.default_unfreeze
        n_stages = len(model.body)
        if not 1 <= unfreeze <= n_stages:
            raise ConfigError(f"unfreeze must be between 1 and {n_stages} for {self.cfg.backbone}, not "
                              f"{unfreeze}", fix=f"pass --unfreeze 1 to {n_stages}")
        model.freeze_body(unfreeze)
        return n_stages - unfreeze

    def _start_from(self, model: Classifier, index: DataIndex, log: Log) -> None:
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

    def encode(self, model: Classifier, cut: int, index: DataIndex, log: Log) -> dict[str, StoreSplit]:
        """Every training photo's clean and augmented views and the validation photos' clean view,
        through the frozen layers [0, cut) of `model` once, into the feature store; only what it lacks
        is encoded. The stored train and val splits."""
        encoder = Encoder(self.cfg, self.spec, self.store_root(), self.precision, self.device)
        splits, seconds = encoder.splits(model.body[:cut], cut, index, log)
        self.progress.cache_seconds = round(self.progress.cache_seconds + seconds, 3)
        return splits

    # --- the loop and its state ---------------------------------------------------------------

    def _loop(self, validated: bool, log: Log) -> Loop:
        main = distributed.is_main()
        best = BestCheckpoint(self.state.save_best if main else _ignore, validated)
        return Loop(self.progress, self.cfg.seed, best, EarlyStopping(self.cfg.patience),
                    ProgressLog(log, show_bar=main), self._save_state)

    def _save_state(self, phase: Phase) -> None:
        """Weights, optimizer and progress, each atomically; progress last, so it never runs ahead.

        Rank 0 alone writes (every rank holds the same state). A SIGTERM (torchrun stopping the group
        when another rank died) waits until all three files are written, so they always agree."""
        if not distributed.is_main():
            return
        with sigterm_deferred():
            self.state.save(phase.model.state_dict(), {"phase": self.progress.phase,
                                                       "optimizer": phase.opt.state_dict(),
                                                       "scheduler": phase.sched.state_dict()},
                            self.progress.to_dict())
            self.run_dir.write_history(self.progress.history)

    def _resumed(self, phase: HeadPhase | FinetunePhase) -> HeadPhase | FinetunePhase:
        """`phase` with the optimizer and schedule it saved, when the run stopped in it."""
        saved = self.state.optimizer() if self.progress.phase == phase.name else None
        if saved is not None and saved.get("phase") == phase.name:
            phase.opt.load_state_dict(saved["optimizer"])
            phase.sched.load_state_dict(saved["scheduler"])
        return phase

    # --- after training -----------------------------------------------------------------------

    def _finish(self, model: Classifier, pooler: Pooler, splits: dict[str, StoreSplit], index: DataIndex,
                taxonomy: Taxonomy | None, log: Log) -> Path:
        from monkeysee.evaluate.plots import plot_training_curves

        cfg, p = self.cfg, self.progress
        model.eval()
        train_views = pooler.views(splits["train"]).numpy()
        val_feats = pooler.views(splits["val"], 1)
        if not distributed.is_main():  # the last collective: rank 0 calibrates and writes alone
            return self.dir
        with torch.no_grad():
            val_logits = model.head.fc(val_feats.to(self.device)).float().cpu().numpy()
        val_targets = splits["val"].targets.numpy()
        calibration = finish.calibration(cfg, val_logits, val_targets)
        detector = finish.unknown_detector(cfg, train_views, splits["train"].targets.numpy(), val_logits,
                                           val_feats.numpy())
        labels = [s.label for s in index.species]
        ladder = answers.answer_ladder(cfg, train_views, splits["train"].targets.numpy(),
                                       softmax(calibration.apply(val_logits)), val_targets, labels, taxonomy)
        log(answers.described(cfg, ladder, labels, taxonomy))
        best = p.best_row()
        validated = len(val_targets) > 0
        manifest = Manifest(
            backbone=cfg.backbone,
            species=tuple(index.species),
            preprocess=self.spec.preprocess,
            explain_layer=self.spec.explain_layer,
            dropout=cfg.dropout,
            seed=cfg.seed,
            config=cfg.to_dict(),
            metrics={"best": {"phase": p.best_phase, "epoch": p.best_epoch,
                              "val_loss": best["val_loss"] if validated else None,
                              "val_acc": best["val_acc"] if validated else None}, "precision": self.precision,
                     "train_seconds": round(p.cache_seconds + sum(r["seconds"] for r in p.history), 1)},
            data_fingerprint=index.fingerprint(),
            calibration=calibration.to_dict(),
            taxonomy=None if taxonomy is None else taxonomy.to_dict(),
            ladder=ladder,
        )
        plot_training_curves(p.history, self.run_dir.file(CURVES))
        self.run_dir.save_checkpoint(model.to(memory_format=torch.contiguous_format), manifest, detector)
        kept = splits["train"].indices.tolist()  # the evidence: view 0 of each kept training photo
        save_evidence(self.run_dir, index, [index.train[i] for i in kept], train_views[:len(kept)],
                      softmax(calibration.apply(val_logits)), val_targets, workers=cfg.workers,
                      preprocess=self.spec.preprocess)
        shown = f"val acc {best['val_acc']:.4f}" if validated else "no validation photos"
        log(f"best: {p.best_phase} epoch {p.best_epoch}, {shown}; temperature {calibration.temperature:.3f}; "
            f"unknown detector {detector.name} keeps {detector.keep or cfg.unknown_keep:.1%} of known photos "
            f"({cfg.unknown_calibration} threshold)")
        return self.dir


def default_store(run_dir: str | Path) -> Path:
    """The feature store a run uses without --store: `feature-store` beside its run folder."""
    return Path(run_dir).resolve().parent / "feature-store"


def _quiet(message: str) -> None:
    """The log of ranks other than 0: one rank speaks for all."""


def _ignore(weights: dict[str, torch.Tensor]) -> None:
    """The best checkpoint of ranks other than 0: rank 0 writes it for all."""
