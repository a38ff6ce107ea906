"""Process-wide speed and reproducibility settings, applied once at the entry point."""

from __future__ import annotations

import ctypes
import functools
import os
import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4

MMAP_THRESHOLD = 16 * 1024 * 1024
"""When serving, blocks this large and larger are mapped on their own and unmapped when freed. A lower
threshold maps more of the model's own activation buffers too (4 MB: a batch of 8 at 224 px took 1.3x
as long per forward pass on one CPU thread)."""


@dataclass(frozen=True)
class MallocProfile:
    """glibc mallopt settings, and the size of the blocks Pillow stores images in (None: its own)."""

    mallopt: tuple[tuple[int, int], ...]
    pillow_block_bytes: int | None = None


MALLOC_PROFILES: dict[str, MallocProfile] = {
    # Each conv layer allocates and frees large buffers; by default glibc serves them with mmap and
    # unmaps them on free, so every forward pass pays page faults again (keeping them: 1.2-1.8x on CPU).
    "training": MallocProfile(((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 1 << 30))),
    # A server decoding photos of every size would otherwise keep its highest water mark for ever, in
    # every request thread's arena, so resident memory climbs far past the photos in flight. The
    # threshold is fixed (setting it turns off glibc's dynamic growth; 65536 is glibc's default mapping
    # count), and Pillow's blocks are made twice as large, so every image of 16 MB or more is stored in
    # blocks over the threshold (with its default 16 MB blocks each block fell just under it).
    "serving": MallocProfile(((_M_MMAP_MAX, 65536), (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                              (_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)),
                             pillow_block_bytes=2 * MMAP_THRESHOLD),
}


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def tune_malloc(profile: str = "training") -> bool:
    """Apply one of `MALLOC_PROFILES` process-wide. Returns False off glibc."""
    chosen = MALLOC_PROFILES[profile]
    if chosen.pillow_block_bytes is not None:
        from PIL import Image

        Image.core.set_block_size(chosen.pillow_block_bytes)
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    applied = [libc.mallopt(k, v) == 1 for k, v in chosen.mallopt]  # every setting, even after a refusal
    return all(applied)


def trim_malloc() -> bool:
    """Hand the free memory of every malloc arena back to the OS (glibc's malloc_trim); a server calls
    it when a burst of photos is over. Returns False off glibc."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True


def bf16_supported() -> bool:
    """True where the CPU has native bf16 matmuls (AVX512-BF16 / AMX), where autocast pays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """Map 'auto' to bf16 where the hardware has it, else fp32."""
    if precision not in {"auto", "fp32", "bf16"}:
        raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if bf16_supported() else "fp32"


def checked_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """`resolve_precision`, with a ConfigError that names the fix for a bad value."""
    from monkeysee.errors import ConfigError

    try:
        return resolve_precision(precision, device)
    except ValueError as exc:
        raise ConfigError(str(exc), fix="pass --precision auto, bf16 or fp32") from None


def autocast(precision: str, device: torch.device | str = "cpu") -> AbstractContextManager:
    """Autocast context for a resolved precision ('fp32' means none)."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch once, at the entry point; returns a generator for data order."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    return torch.Generator().manual_seed(seed)


def check_device(name: str) -> str:
    """`name` if this machine has that device ('auto', 'cpu', 'cuda', 'cuda:N'), else a ConfigError."""
    from monkeysee.errors import ConfigError

    if name in ("auto", "cpu"):
        return name
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}", fix="pass --device auto, cpu or cuda") from None
    if device.type != "cuda":
        raise ConfigError(f"device {name!r} is not supported", fix="pass --device auto, cpu or cuda")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for, but torch sees no CUDA GPU on this machine",
                          fix="pass --device auto (or cpu) to train on the CPU")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"there is no {name} (this machine has {torch.cuda.device_count()} GPU(s))",
                          fix="pass --device cuda:0, or auto")
    return name


def pick_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(check_device(name))
