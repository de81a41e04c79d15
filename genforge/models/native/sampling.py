"""The fused token draw of ``sample.c`` (softmax at a temperature, inverse CDF) behind a Python call."""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from genforge.models import native


def _fn():
    """The C function, or None (looked up through ``native.load``, which remembers the build)."""
    lib = native.load("sample")
    if lib is None:
        return None
    fn = lib.gf_draw
    if fn.argtypes is None:
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_float] + [ctypes.c_void_p] * 2
    return fn


def draw_address() -> int | None:
    """The address of ``gf_draw`` (for C code that draws as :func:`draw` does), or None when not built."""
    fn = _fn()
    return None if fn is None else ctypes.cast(fn, ctypes.c_void_p).value


def draw(logits: Tensor, temperature: float, u: Tensor) -> Tensor | None:
    """One token per row: logits float32 [B, V] (CPU, contiguous), u float32 [B, 1] uniform → int64 [B];
    None when the kernel is unavailable or does not apply (the caller draws with PyTorch)."""
    fn = _fn()
    if fn is None or logits.dtype != torch.float32 or logits.device.type != "cpu" or not logits.is_contiguous():
        return None
    B, V = logits.shape
    tokens = torch.empty(B, dtype=torch.int64)
    if u.dtype != torch.float32 or not u.is_contiguous():
        u = u.to(torch.float32).contiguous()
    fn(logits.data_ptr(), B, V, temperature, u.data_ptr(), tokens.data_ptr())
    return tokens
