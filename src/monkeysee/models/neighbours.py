"""A bank of L2-normalised training features and the k-th nearest-neighbour similarity of queries.

The unknown-species detector scores a photo by how far its pooled feature is from the training
features: 1 - (cosine similarity of the k-th nearest). `NeighbourBank` answers that exactly (no
approximate index: the score is a threshold's input and must not move between runs), in float32 with
one matrix product per block of the bank, keeping only a running top-k. Memory is the bank itself
(M x d x 4 bytes) plus one (queries x block) similarity block, never queries x M.
"""

from __future__ import annotations

import numpy as np
import torch

BLOCK = 32_768  # bank rows per matrix product: a 256 x 32k float32 block is 32 MB


def l2_normalise(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length as float32 (all-zero rows stay zero)."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
    if t.ndim != 2:
        raise ValueError(f"features must be (N, d), got shape {tuple(t.shape)}")
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


class NeighbourBank:
    """Exact k-nearest cosine similarities against `features` (N, d), normalised and kept as float32."""

    def __init__(self, features: np.ndarray | torch.Tensor, block: int = BLOCK) -> None:
        self.bank = l2_normalise(features).contiguous()
        if len(self.bank) == 0:
            raise ValueError("need at least one feature in the bank")
        self.block = int(block)

    def __len__(self) -> int:
        return len(self.bank)

    @property
    def nbytes(self) -> int:
        return self.bank.numel() * self.bank.element_size()

    def nearest(self, queries: np.ndarray | torch.Tensor, k: int,
                batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """(similarities, bank indices), each (Q, k), nearest first; k is capped at the bank size."""
        q = l2_normalise(queries)
        if q.shape[1] != self.bank.shape[1]:
            raise ValueError(f"queries have {q.shape[1]} dimensions, the bank {self.bank.shape[1]}")
        k = min(int(k), len(self.bank))
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        sims = torch.empty(len(q), k)
        index = torch.empty(len(q), k, dtype=torch.long)
        with torch.inference_mode():
            for i in range(0, len(q), batch):
                sims[i : i + batch], index[i : i + batch] = self._nearest(q[i : i + batch], k)
        return sims, index

    def _nearest(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        best_s = torch.full((len(q), 0), -torch.inf)
        best_i = torch.empty((len(q), 0), dtype=torch.long)
        for start in range(0, len(self.bank), self.block):
            s = q @ self.bank[start : start + self.block].T
            top_s, top_i = s.topk(min(k, s.shape[1]), dim=1)
            both_s = torch.cat([best_s, top_s], dim=1)
            both_i = torch.cat([best_i, top_i + start], dim=1)
            best_s, at = both_s.topk(min(k, both_s.shape[1]), dim=1)
            best_i = both_i.gather(1, at)
        return best_s, best_i

    def kth_similarity(self, queries: np.ndarray | torch.Tensor, k: int) -> np.ndarray:
        """Cosine similarity of each query's k-th nearest bank feature (the knn score is 1 minus it)."""
        return self.nearest(queries, k)[0][:, -1].double().numpy()
