"""The epoch loop and the objects it calls, on a scripted phase: which epoch is kept as the best, when a
phase stops early, and that a loop resumed from saved progress ends where an uninterrupted one does."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from monkeysee.errors import CheckpointError
from monkeysee.rundir import RunDir
from monkeysee.train.loop import BestCheckpoint, EarlyStopping, Loop, Progress, ProgressLog


class Scripted:
    """A phase whose validation losses are given: its one weight holds the number of epochs trained."""

    def __init__(self, name: str, losses: list[float]) -> None:
        self.name, self.losses, self.epochs = name, losses, len(losses)
        self.model = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.model.weight.zero_()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda step: 1.0)

    def train_epoch(self, gen: torch.Generator) -> tuple[float, float]:
        with torch.no_grad():
            self.model.weight += 1
        return 1.0, 0.5

    def validate(self) -> tuple[float, float]:
        return self.losses[int(self.model.weight.item()) - 1], 0.5


def _loop(progress: Progress, patience: int, saved: list[float], states: list[Progress],
          validated: bool = True) -> Loop:
    best = BestCheckpoint(lambda weights: saved.append(float(weights["weight"])), validated)
    return Loop(progress, seed=0, best=best, stopping=EarlyStopping(patience),
                report=ProgressLog(lambda _: None, show_bar=False),
                save_state=lambda phase: states.append(copy.deepcopy(progress)))


def test_the_best_epoch_is_kept_and_the_phase_stops_after_patience_epochs_without_a_better_loss():
    progress, saved, states = Progress(), [], []
    _loop(progress, patience=2, saved=saved, states=states).run(Scripted("head", [3.0, 2.0, 2.0, 2.5, 1.0]))
    # epoch 3's 2.0 is no better than epoch 2's (not by more than 1e-4): epochs 3 and 4 are bad, so it stops
    assert saved == [1.0, 2.0]
    assert (progress.best_phase, progress.best_epoch, progress.best_val_loss) == ("head", 2, 2.0)
    assert [r["epoch"] for r in progress.history] == [1, 2, 3, 4]
    assert [s.epoch for s in states] == [1, 2, 3, 4] and progress.done_phases == ["head"]
    assert progress.best_row()["val_loss"] == 2.0


def test_without_validation_photos_every_epoch_is_the_best_so_the_last_is_kept():
    progress, saved = Progress(), []
    nan = float("nan")
    _loop(progress, patience=1, saved=saved, states=[], validated=False).run(Scripted("head", [nan] * 3))
    assert saved == [1.0, 2.0, 3.0] and progress.best_epoch == 3 and progress.bad_epochs == 0


def test_a_loop_resumed_from_saved_progress_ends_as_the_uninterrupted_one():
    losses = [3.0, 2.0, 2.5, 1.5, 1.6, 1.7]
    whole, saved_whole = Progress(), []
    _loop(whole, patience=2, saved=saved_whole, states=[]).run(Scripted("finetune", losses))
    states: list[Progress] = []
    _loop(Progress(), patience=2, saved=[], states=states).run(Scripted("finetune", losses[:3]))
    resumed = Progress(**copy.deepcopy(states[1].to_dict()))  # stopped after epoch 2
    phase = Scripted("finetune", losses)
    with torch.no_grad():
        phase.model.weight.fill_(2)
    saved: list[float] = []
    _loop(resumed, patience=2, saved=saved, states=[]).run(phase)
    assert resumed.to_dict() | {"history": None} == whole.to_dict() | {"history": None}
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in whole.history]
    assert saved == [4.0] and saved_whole[-1] == 4.0


def test_run_state_round_trips_and_names_a_missing_best_checkpoint(tmp_path):
    state = RunDir(tmp_path / "run").state
    assert state.read_progress() is None and state.last_weights() is None and state.optimizer() is None
    with pytest.raises(CheckpointError, match="no best epoch was saved"):
        state.best_weights()
    weights = {"w": torch.arange(3.0)}
    state.save(weights, {"phase": "head", "optimizer": {"lr": 0.1}}, Progress(epoch=2).to_dict())
    state.save_best({"w": torch.ones(3)})
    assert torch.equal(state.last_weights()["w"], weights["w"])
    assert torch.equal(state.best_weights()["w"], torch.ones(3))
    assert state.optimizer() == {"phase": "head", "optimizer": {"lr": 0.1}}
    assert Progress(**state.read_progress()) == Progress(epoch=2)
    assert RunDir(tmp_path / "run").holds_run()
