"""The steps a training phase is made of: a one-cycle schedule, one pass over the photos in
mini-batches (the same steps and data order whatever the world size), the trainable module, and the
validation score."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler, OneCycleLR

from monkeysee import distributed
from monkeysee.config import TrainConfig
from monkeysee.models import Head

BatchForward = Callable[[torch.Tensor, slice, int], torch.Tensor]


def one_cycle(opt: torch.optim.Optimizer, max_lr: float | list[float], steps: int,
              pct_start: float) -> OneCycleLR:
    """torch's OneCycleLR, except that a warm-up of exactly one step (pct_start * steps == 1, say 10
    epochs of one batch) divides by zero in torch; that warm-up is made two steps (none, of two)."""
    if math.isclose(pct_start * steps, 1.0):
        pct_start = 2 / steps if steps > 2 else 0.25
    return OneCycleLR(opt, max_lr, total_steps=steps, pct_start=pct_start)


def fit_epoch(
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


class Trainable(nn.Module):
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


def score(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> tuple[float, float]:
    """Mean cross-entropy (with label smoothing) and accuracy of `logits`; NaN for no photos."""
    logits = logits.float().cpu()
    loss = F.cross_entropy(logits, targets, label_smoothing=smoothing).item()
    return loss, float((logits.argmax(1) == targets).float().mean())


def train_mode(model: nn.Module) -> None:
    """Train mode, except BatchNorm keeps its ImageNet statistics (small data would corrupt them)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
