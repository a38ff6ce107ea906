"""Process-wide speed and reproducibility settings, applied once at the entry point."""

from __future__ import annotations

import ctypes
import os
import random
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def tune_malloc() -> bool:
    """Keep glibc from handing freed tensor buffers back to the OS (measured 1.2-1.8x on CPU here).

    Each conv layer allocates and frees large buffers; by default glibc serves them with mmap and
    unmaps them on free, so every forward pass pays page faults again. Returns False off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1
        ok &= libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
        return bool(ok)
    except (OSError, AttributeError):
        return False


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
