"""Helpers shared by the benchmarks: an idle check and robust summaries."""

from __future__ import annotations

import os
import statistics
import time


def cpu_busy_fraction(seconds: float = 1.0) -> float:
    """Fraction of all cores busy over ``seconds`` (Linux /proc/stat; 0.0 elsewhere)."""
    def snap():
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        idle = vals[3] + vals[4]
        return sum(vals), idle

    try:
        t0, i0 = snap()
        time.sleep(seconds)
        t1, i1 = snap()
    except OSError:
        return 0.0
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def require_idle(limit: float = 0.15) -> float:
    """Print the machine's load and warn loudly when other work shares the CPU."""
    busy = cpu_busy_fraction()
    print(f"machine: {os.cpu_count()} cores, {busy:.0%} busy before start", flush=True)
    if busy > limit:
        print(f"WARNING: the CPU is {busy:.0%} busy with other work; figures below are unreliable", flush=True)
    return busy


def summary(values: list[float]) -> str:
    """``median (min–max, n=K)``."""
    return f"{statistics.median(values):,.0f} (min {min(values):,.0f}, max {max(values):,.0f}, n={len(values)})"
