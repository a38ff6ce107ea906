"""The two phases of transfer learning: the head on the frozen body's pooled features, then the top
stages and the head on the stored frozen-layer activations (one random view per photo per epoch)."""

from __future__ import annotations

import torch
from torch import nn

from monkeysee import distributed
from monkeysee.config import TrainConfig
from monkeysee.models import Classifier
from monkeysee.models.balance import class_weights
from monkeysee.runtime import autocast
from monkeysee.train.steps import Trainable, fit_epoch, one_cycle, score, train_mode
from monkeysee.train.store import StoreSplit


class HeadPhase:
    """Frozen body: the pooled features are fixed, so the head trains on them alone."""

    name = "head"

    def __init__(self, cfg: TrainConfig, model: Classifier, feats: dict[str, torch.Tensor],
                 splits: dict[str, StoreSplit], device: torch.device) -> None:
        self.cfg, self.model, self.feats, self.device = cfg, model, feats, device
        self.val_targets = splits["val"].targets
        self.y_train = splits["train"].targets.repeat(splits["train"].view_count)
        self.weights = class_weights(cfg.class_weights, splits["train"].targets, model.num_classes)
        self.net = distributed.data_parallel(Trainable(model.head), device)
        self.opt = torch.optim.AdamW(model.head.parameters(), lr=cfg.head_lr, weight_decay=cfg.weight_decay)
        self.epochs = cfg.head_epochs
        steps = cfg.head_epochs * -(-len(self.y_train) // cfg.batch_size)
        self.sched = one_cycle(self.opt, cfg.head_lr, steps, pct_start=0.1)

    def train_epoch(self, gen: torch.Generator) -> tuple[float, float]:
        self.model.head.train()
        perm = torch.randperm(len(self.y_train), generator=gen)
        train = self.feats["train"]
        return fit_epoch(lambda i, rows, batch: self.net(train[i].to(self.device), rows, batch), self.y_train,
                         perm, self.opt, self.sched, self.cfg, self.weights)

    def validate(self) -> tuple[float, float]:
        self.model.head.eval()
        with torch.no_grad():
            logits = self.model.head.fc(self.feats["val"].to(self.device))
        return score(logits, self.val_targets, self.cfg.label_smoothing)


class FinetunePhase:
    """Top stages + head on the stored boundary activations; one random view per photo per epoch."""

    name = "finetune"

    def __init__(self, cfg: TrainConfig, model: Classifier, upper: nn.Module, splits: dict[str, StoreSplit],
                 device: torch.device, precision: str) -> None:
        self.cfg, self.model, self.device, self.precision = cfg, model, device, precision
        self.train, self.val = splits["train"], splits["val"]
        params = [p for p in upper.parameters() if p.requires_grad]
        groups = [{"params": params, "lr": cfg.finetune_lr},
                  {"params": list(model.head.parameters()), "lr": cfg.finetune_head_lr}]
        self.opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        self.epochs = cfg.finetune_epochs
        steps = cfg.finetune_epochs * -(-len(self.train) // cfg.batch_size)
        self.sched = one_cycle(self.opt, [cfg.finetune_lr, cfg.finetune_head_lr], steps, pct_start=0.2)
        self.trainable = Trainable(model.head, upper)
        self.net = distributed.data_parallel(self.trainable, device)
        self.weights = class_weights(cfg.class_weights, self.train.targets, model.num_classes)

    def _forward(self, acts: torch.Tensor, rows: slice | None = None, batch: int = 0,
                 through: nn.Module | None = None) -> torch.Tensor:
        with autocast(self.precision, self.device):
            return (through or self.net)(acts.to(self.device).float(), rows, batch)

    def train_epoch(self, gen: torch.Generator) -> tuple[float, float]:
        train_mode(self.model)
        train = self.train
        view = torch.randint(train.view_count, (len(train),), generator=gen)
        perm = torch.randperm(len(train), generator=gen)
        return fit_epoch(lambda i, rows, batch: self._forward(train.gather(view[i], i), rows, batch),
                         train.targets, perm, self.opt, self.sched, self.cfg, self.weights)

    def validate(self) -> tuple[float, float]:
        """Each rank scores its block of the validation photos; the logits are gathered."""
        self.model.eval()
        val = self.val
        block = distributed.rows_of(len(val))
        with torch.no_grad():
            parts = [self._forward(val.gather(0, r), through=self.trainable).float().cpu()
                     for r in torch.arange(block.start, block.stop).split(256)]
        local = torch.cat(parts) if parts else torch.empty(0, self.model.num_classes)
        return score(distributed.gather_rows(local, len(val)), val.targets, self.cfg.label_smoothing)
