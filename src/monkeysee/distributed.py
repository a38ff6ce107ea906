"""Running under `torchrun`: one process per rank, joined by `torch.distributed`.

`torchrun` (or `python -m torch.distributed.run`) starts each process with RANK, WORLD_SIZE,
LOCAL_RANK and a rendezvous address in its environment. `start()` reads them and joins the process
group: gloo for CPU tensors, NCCL for CUDA ones, chosen from the device. Without that environment
nothing is initialised and every helper here answers as a world of one, so a plain
`monkeysee train` is exactly what it was: no process group, no collectives, no extra copies.

The helpers are the only collectives the project uses: `barrier`, `all_reduce_sum`, `gather_rows`
(every rank's rows of one table, in rank order) and the deterministic shares `share` / `rows_of`.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

TIMEOUT = timedelta(minutes=30)
"""How long a collective waits for the slowest rank (rank 0 calibrating, a big shard of photos)."""


@dataclass(frozen=True)
class World:
    """Where this process stands among the ranks `torchrun` started."""

    rank: int
    size: int
    local_rank: int
    restarts: int  # TORCHELASTIC_RESTART_COUNT: how often the agents restarted this group


def launched() -> World | None:
    """The world `torchrun` describes in the environment, or None for a plain process."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    env = os.environ
    return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")),
                 int(env.get("TORCHELASTIC_RESTART_COUNT", "0")))


def start(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun (once; later calls only return the device).

    Returns the device this rank computes on: under torchrun a bare "cuda" becomes this rank's
    `cuda:LOCAL_RANK`, so the processes of one node share its GPUs one each.
    """
    world = launched()
    if world is None:
        return device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", world.local_rank)
    if world.size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # The agent's store outlives a restart, and the process group's keys (each rank's gloo address)
        # would be those of the dead attempt: torch's own env:// rendezvous, under a prefix per attempt.
        store, rank, size = next(dist.rendezvous("env://", timeout=TIMEOUT))
        store = dist.PrefixStore(f"monkeysee/attempt-{world.restarts}", store)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=rank,
                                world_size=size, timeout=TIMEOUT)
        atexit.register(_leave)
    return device


def _leave() -> None:
    """Destroy the process group while the interpreter is still whole. Left to interpreter shutdown,
    gloo's worker threads can abort the process ('terminate called without an active exception',
    pytorch/pytorch#190489): seen once in CI, a rank exiting -6 after all its rows were written."""
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the one process that writes the run folder, logs, evaluates and merges outputs."""
    return rank() == 0


def restarted() -> bool:
    """True when torchrun restarted the workers after a failure (so the command should continue)."""
    world = launched()
    return world is not None and world.restarts > 0


def _comm_device() -> torch.device:
    """NCCL moves CUDA tensors only; gloo takes CPU ones."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every rank (a no-op alone)."""
    if active():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """The sums over ranks of a few numbers (float64, so counts stay exact)."""
    if not active():
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.cpu().tolist()


def rows_of(total: int, *, of_rank: int | None = None) -> range:
    """This rank's contiguous block of `total` rows; blocks go in rank order, sizes differ by at most 1."""
    r = rank() if of_rank is None else of_rank
    n = size()
    base, extra = divmod(total, n)
    start = r * base + min(r, extra)
    return range(start, start + base + (r < extra))


def gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """Every rank's `rows_of(total)` block of one table, concatenated in rank order, on every rank.

    `local` is this rank's block; the result has `total` rows, on `local`'s device and dtype.
    """
    if not active():
        return local
    n = size()
    width = -(-total // n)
    blocks = [len(rows_of(total, of_rank=r)) for r in range(n)]
    if len(local) != blocks[rank()]:
        raise ValueError(f"rank {rank()} holds {len(local)} rows, not its block of {blocks[rank()]}")
    dev = _comm_device()
    padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=dev)
    padded[: len(local)] = local.to(dev)
    parts = [torch.empty_like(padded) for _ in range(n)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:b] for p, b in zip(parts, blocks, strict=True)]).to(local.device)


def share(items: Sequence[T]) -> list[T]:
    """This rank's share of a list: every `size()`-th item from position `rank()`, so shares are
    disjoint, together complete, and the same on every run with the same world size."""
    return list(items[rank()::size()])


def batch_slice(batch: int) -> slice:
    """This rank's contiguous part of a global mini-batch of `batch` rows (possibly empty)."""
    block = rows_of(batch)
    return slice(block.start, block.stop)


def data_parallel(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`module` wrapped in DistributedDataParallel inside a process group, else `module` itself.

    Buffers are not synced before each forward: the only ones trained through are BatchNorm
    statistics, which stay frozen (every rank holds the same); only the gradients need exchanging.
    """
    if not active():
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, forward_sync_buffers=False)
