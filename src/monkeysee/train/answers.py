"""The answer ladder's thresholds, fitted after the last epoch on photos the model did not learn from.

The validation photos alone are too few to vouch for a high accuracy (110 monkey photos cannot show
99.5% with an error to spare), so the thresholds are fitted on them pooled with cross-fitted predictions
of the training photos: the pooled features of the training photos are split into folds (every view of a
photo in one fold), a linear head like the run's is trained on the other folds' views, and it predicts
each held-out photo's clean view. Those out-of-fold logits get their own temperature, so that their
probabilities are calibrated as the run's are on the validation photos; the thresholds then hold on
calibrated probabilities whichever head produced them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from monkeysee.config import TrainConfig
from monkeysee.data.taxonomy import Taxonomy
from monkeysee.models.calibration import assign_folds, fit_temperature
from monkeysee.models.ladder import fit_thresholds, rungs
from monkeysee.models.unknown import softmax

FOLDS = 5
EPOCHS = 8
BATCH = 1024
MIN_STEPS = 16
SOURCE = "cross-fitted training photos and validation photos"


def crossfit_logits(views: np.ndarray, targets: np.ndarray, classes: int, cfg: TrainConfig,
                    folds: int = FOLDS, epochs: int = EPOCHS) -> np.ndarray:
    """(N, classes) logits of each training photo's clean view (row i of `views`) from a linear head
    trained on the photos of the other folds, all their views (view-major rows v*N + i)."""
    n = len(targets)
    count = len(views) // n
    fold = assign_folds(targets, min(folds, n), cfg.seed)
    out = np.zeros((n, classes), dtype=np.float64)
    x = torch.from_numpy(np.asarray(views, dtype=np.float32))
    for f in range(int(fold.max()) + 1):
        held = fold == f
        rows = np.flatnonzero(np.tile(~held, count))
        head = _fit_head(x[rows], torch.from_numpy(np.tile(targets, count)[rows]), classes, cfg, epochs)
        with torch.no_grad():
            out[held] = head(x[:n][torch.from_numpy(held)]).double().numpy()
    return out


def _fit_head(x: torch.Tensor, y: torch.Tensor, classes: int, cfg: TrainConfig, epochs: int) -> nn.Module:
    """A linear head trained as the run's head is: AdamW, one-cycle rate, label smoothing."""
    gen = torch.Generator().manual_seed(cfg.seed)
    batch_size = min(BATCH, max(16, len(y) // MIN_STEPS))  # small sets still take MIN_STEPS steps an epoch
    with torch.random.fork_rng(devices=[]):  # the initial weights from the seed, the run's RNG untouched
        torch.manual_seed(cfg.seed)
        head = nn.Linear(x.shape[1], classes)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.head_lr, weight_decay=cfg.weight_decay)
    steps = epochs * -(-len(y) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.head_lr, total_steps=steps, pct_start=0.1)
    loss = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=gen).split(batch_size):
            opt.zero_grad()
            loss(head(x[batch]), y[batch]).backward()
            opt.step()
            sched.step()
    return head.eval()


def photos_needed(accuracy: float) -> int:
    """The fewest photos that can vouch for `accuracy` with one error added: n / (n + 1) >= accuracy."""
    return math.ceil(accuracy / (1 - accuracy) - 1e-9)


def answer_ladder(cfg: TrainConfig, train_views: np.ndarray, train_targets: np.ndarray,
                  val_probs: np.ndarray, val_targets: np.ndarray, labels: Sequence[str],
                  taxonomy: Taxonomy | None, folds: int = FOLDS,
                  epochs: int = EPOCHS) -> dict[str, Any] | None:
    """The manifest's `ladder`: a threshold per rank, fitted to `cfg.answer_accuracy` on calibrated
    out-of-fold probabilities of the training photos pooled with the validation photos'. None when
    there are too few photos to vouch for that accuracy at all (`photos_needed`): such a run answers
    every photo at species rank, as a run without a ladder does."""
    if len(train_targets) + len(val_targets) < photos_needed(cfg.answer_accuracy):
        return None
    logits = crossfit_logits(train_views, train_targets, len(labels), cfg, folds, epochs)
    calibrated = cfg.calibration == "temperature"  # as the run's own probabilities are, or not
    oof = softmax(fit_temperature(logits, train_targets).apply(logits) if calibrated else logits)
    probs = np.concatenate([oof, np.asarray(val_probs, dtype=np.float64).reshape(-1, len(labels))])
    targets = np.concatenate([train_targets, val_targets]).astype(np.int64)
    ladder = rungs(labels, taxonomy, cfg.answer_max_share)
    thresholds = fit_thresholds(probs, targets, ladder, cfg.answer_accuracy)
    return {"accuracy": cfg.answer_accuracy, "ranks": [r.rank for r in ladder],
            "thresholds": list(thresholds), "source": SOURCE, "max_share": cfg.answer_max_share}


def described(cfg: TrainConfig, ladder: dict[str, Any] | None, labels: Sequence[str],
              taxonomy: Taxonomy | None) -> str:
    """The training log's line about the ladder."""
    if ladder is None:
        return (f"answer ladder: fewer than {photos_needed(cfg.answer_accuracy)} training and validation "
                f"photos cannot vouch for {cfg.answer_accuracy:.1%} right answers; every answer is given "
                "at species rank")
    shown = ", ".join(f"{r} {t:.3f}" for r, t in zip(ladder["ranks"], ladder["thresholds"], strict=True))
    share = ladder["max_share"]
    closed = [name for rung in rungs(labels, taxonomy, share) for name in sorted(rung.closed)]
    never = f"; never answered, each holding over {share:.0%} of the species: {', '.join(closed)}" if closed \
        else ""
    return f"answer ladder ({cfg.answer_accuracy:.1%} right at each rank): thresholds {shown}{never}"
