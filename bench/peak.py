"""The machine's measured matmul peak, the denominator of every MFU figure the benchmarks print."""

from __future__ import annotations

import math
import time

import torch


def matmul_peak(dtype: torch.dtype, n: int = 2048, budget_s: float = 3.0) -> float:
    """Best GFLOP/s of an n×n×n matmul in ``dtype`` over about ``budget_s`` seconds.

    A dtype without a fast path (bf16 on CPUs lacking AVX-512 BF16/AMX) is
    measured on smaller matrices so the probe stays short.
    """
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    t = time.perf_counter()
    torch.mm(a, b)
    if time.perf_counter() - t > 1.0 and n > 512:
        return matmul_peak(dtype, 512, budget_s)
    best, start = math.inf, time.perf_counter()
    while time.perf_counter() - start < budget_s:
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9
