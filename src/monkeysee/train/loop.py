"""The epoch loop of a training phase. What it keeps track of are small objects it calls after every
epoch: the best checkpoint (lowest validation loss), early stopping (patience) and the progress log.
Their state lives in `Progress`, which is saved after every epoch, so a resumed run carries on exactly."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from tqdm.auto import tqdm

PHASES = ("head", "finetune")
MIN_DELTA = 1e-4
"""A validation loss counts as better only when it is lower by more than this."""


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

    def best_row(self) -> dict[str, Any]:
        """The history row of the best epoch."""
        best = (self.best_phase, self.best_epoch)
        return next(r for r in self.history if (r["phase"], r["epoch"]) == best)


class Phase(Protocol):
    """One phase of training: what the loop needs from it."""

    @property
    def name(self) -> str: ...

    @property
    def epochs(self) -> int: ...

    @property
    def model(self) -> nn.Module:
        """What a checkpoint of this phase saves."""

    @property
    def opt(self) -> torch.optim.Optimizer: ...

    @property
    def sched(self) -> LRScheduler: ...

    def train_epoch(self, gen: torch.Generator) -> tuple[float, float]: ...

    def validate(self) -> tuple[float, float]: ...


class BestCheckpoint:
    """Keeps the weights of the epoch with the lowest validation loss through `save`. Without
    validation photos there is nothing to compare, so every epoch is the best so far: the last is kept."""

    def __init__(self, save: Callable[[dict[str, torch.Tensor]], None], validated: bool = True) -> None:
        self.save, self.validated = save, validated

    def update(self, p: Progress, row: dict[str, Any], model: nn.Module) -> bool:
        """Record `row`'s epoch as the best if it is; True when it was."""
        if self.validated and not row["val_loss"] < p.best_val_loss - MIN_DELTA:
            return False
        p.best_val_loss, p.best_phase, p.best_epoch = row["val_loss"], row["phase"], row["epoch"]
        self.save(model.state_dict())
        return True


class EarlyStopping:
    """Stops a phase after `patience` epochs in a row without a better validation loss."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def update(self, p: Progress, improved: bool) -> bool:
        """Count this epoch; True when the phase should stop."""
        p.bad_epochs = 0 if improved else p.bad_epochs + 1
        return p.bad_epochs >= self.patience


class ProgressLog:
    """A progress bar over a phase's epochs (quiet when `show_bar` is off or not on a terminal) and one
    log line per epoch."""

    def __init__(self, log: Callable[[str], None], show_bar: bool = True) -> None:
        self.log, self.show_bar = log, show_bar
        self._bar: Any = None

    def epochs(self, phase: str, start: int, epochs: int) -> Iterator[int]:
        self._bar = tqdm(range(start, epochs + 1), desc=f"phase {phase}", unit="epoch",
                         disable=None if self.show_bar else True, leave=False)
        try:
            yield from self._bar
        finally:
            self._bar.close()

    def epoch(self, row: dict[str, Any], epochs: int) -> None:
        self._bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row['train_acc']:.3f}",
                              val_acc=f"{row['val_acc']:.3f}")
        self.log(f"{row['phase']} {row['epoch']:>2}/{epochs}: train loss {row['train_loss']:.4f} acc "
                 f"{row['train_acc']:.4f} | val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} | "
                 f"{row['seconds']:.1f}s")

    def stopped(self, phase: str, bad_epochs: int) -> None:
        self.log(f"{phase}: early stop, no val improvement for {bad_epochs} epochs")


@dataclass
class Loop:
    """Runs phases epoch by epoch from where `progress` says, calling its trackers after each epoch and
    `save_state` once the epoch is complete."""

    progress: Progress
    seed: int
    best: BestCheckpoint
    stopping: EarlyStopping
    report: ProgressLog
    save_state: Callable[[Phase], None]

    def run(self, phase: Phase) -> None:
        p, name = self.progress, phase.name
        continuing = p.phase == name
        start = p.epoch + 1 if continuing else 1
        p.phase, p.bad_epochs = name, (p.bad_epochs if continuing else 0)
        for epoch in self.report.epochs(name, start, phase.epochs):
            row = self._epoch(phase, epoch)
            p.history.append(row)
            self.report.epoch(row, phase.epochs)
            stop = self.stopping.update(p, self.best.update(p, row, phase.model))
            p.epoch = epoch
            if stop or epoch == phase.epochs:
                p.done_phases.append(name)
            self.save_state(phase)
            if stop:
                self.report.stopped(name, p.bad_epochs)
                break
        if name not in p.done_phases:  # resumed after the last epoch but before it was marked done
            p.done_phases.append(name)
            self.save_state(phase)

    def _epoch(self, phase: Phase, epoch: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        # Order, views and dropout depend only on (seed, phase, epoch): resuming replays them exactly.
        salt = self.seed * 1000 + PHASES.index(phase.name) * 100 + epoch
        torch.manual_seed(salt)
        train_loss, train_acc = phase.train_epoch(torch.Generator().manual_seed(salt))
        val_loss, val_acc = phase.validate()
        return {"phase": phase.name, "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                "val_loss": val_loss, "val_acc": val_acc, "lr": phase.opt.param_groups[0]["lr"],
                "seconds": round(time.perf_counter() - t0, 3)}
