"""Device and numeric precision, resolved in one place.

``precision`` is one of ``fp32``, ``bf16-mixed`` (autocast to bfloat16; the CPU
path uses AVX-512 bf16 where present) and ``fp16-mixed`` (CUDA only, with a
gradient scaler). Parameters, optimizer state and losses stay fp32 throughout.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch

from genforge.config import ConfigError


@dataclass(frozen=True)
class Precision:
    device: torch.device
    name: str  # fp32 | bf16-mixed | fp16-mixed
    autocast: Callable[[], ContextManager]
    use_scaler: bool  # only fp16 needs loss scaling


def resolve_device(device: str) -> torch.device:
    """``auto`` → cuda if available, else mps, else cpu; explicit names are checked."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device {device!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but CUDA is not available on this machine; use auto or cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device={device!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={device!r} but MPS is not available on this machine; use auto or cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {device!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return dev


def resolve_precision(device: torch.device, precision: str) -> Precision:
    """Build the autocast context factory for ``precision`` on ``device``."""
    if precision == "fp32":
        return Precision(device, precision, contextlib.nullcontext, False)
    if precision == "bf16-mixed":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise RuntimeError("train.precision=bf16-mixed but this GPU has no bfloat16 support; use fp16-mixed")
        dtype = torch.bfloat16
        return Precision(device, precision, lambda: torch.autocast(device.type, dtype=dtype), False)
    if precision == "fp16-mixed":
        if device.type != "cuda":
            raise RuntimeError(f"train.precision=fp16-mixed needs CUDA (got {device.type}); "
                               "fp16 has no fast path on CPU: use bf16-mixed or fp32")
        return Precision(device, precision, lambda: torch.autocast("cuda", dtype=torch.float16), True)
    raise ValueError(f"unknown precision {precision!r}")
