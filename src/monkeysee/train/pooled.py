"""Pooled features, the head's input, of the photos of a `StoreSplit`: the stored frozen-layer
activations through the trainable stages, average-pooled. They are kept in the feature store under a
key of the body's current weights, so a body that comes back (a resumed run, another head on the same
body, a grown run's old photos) reads them instead of computing them again."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from monkeysee import distributed
from monkeysee.models import Classifier
from monkeysee.models.fold import folded
from monkeysee.runtime import autocast
from monkeysee.train.store import FeatureStore, StoreSplit

POOLED_SHARD_ROWS = 4096  # pooled rows per store shard: 10 MB of Lite0's 1280 features in bf16


class Pooler:
    """Pools the photos of store splits through `model`'s body: its frozen layers' stored activations
    through `upper`, the trainable stages, with the body's weights as they are when called."""

    def __init__(self, model: Classifier, upper: nn.Module, precision: str, device: torch.device) -> None:
        self.model, self.upper, self.precision, self.device = model, upper, precision, device

    def views(self, split: StoreSplit, count: int | None = None) -> torch.Tensor:
        """Pooled features of views 0..count-1 (default all) of every photo, view-major: row v*N + i.

        Rows the store already holds for the body's current weights are read; the rest are pooled and
        added to it. Each rank does its block of the photos; the blocks are gathered, so every rank
        holds all rows."""
        n = split.view_count if count is None else count
        pooled = FeatureStore(split.store.root, split.store.key.pooled(self.model.body))
        block = distributed.rows_of(len(split))
        rows = torch.arange(block.start, block.stop)
        # folded: a copy, as the key says
        net = folded(self.upper) if pooled.key.folded else self.upper.eval()
        return torch.cat([distributed.gather_rows(self._block(net, split, v, rows, pooled), len(split))
                          for v in range(n)])

    def _block(self, net: nn.Module, split: StoreSplit, view: int, rows: torch.Tensor,
               pooled: FeatureStore) -> torch.Tensor:
        """Pooled features of `view` of the photos at `rows`: read where stored, else computed and stored."""
        contents = [split.contents[i] for i in rows.tolist()]
        have = torch.tensor([pooled.has(c, view) for c in contents], dtype=torch.bool)
        out = torch.empty(len(rows), self.model.num_features)
        if have.any():
            stored = [c for c, h in zip(contents, have.tolist(), strict=True) if h]
            out[have] = pooled.read(stored, view).float()
        todo = rows[~have]
        if len(todo):
            # rounded to the stored dtype, so a run that computes them equals one that reads them back
            fresh = self._pool(net, (split.gather(view, r) for r in todo.split(256)))
            fresh = fresh.to(pooled.key.dtype)
            out[~have] = fresh.float()
            size = POOLED_SHARD_ROWS
            for part, feats in zip(todo.split(size), fresh.split(size), strict=True):
                pooled.write(feats, [split.contents[i] for i in part.tolist()], [view] * len(part))
        return out

    @torch.no_grad()
    def _pool(self, net: nn.Module, chunks: Iterable[torch.Tensor]) -> torch.Tensor:
        """The head's input for each chunk of frozen-layer activations, through `net` (the trainable
        stages as `views` prepared them, in eval mode)."""
        out = []
        for chunk in chunks:
            with autocast(self.precision, self.device):
                out.append(self.model.head.pooled(net(chunk.to(self.device).float())).float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.model.num_features)
