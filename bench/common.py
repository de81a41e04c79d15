"""Helpers shared by the benchmarks: where the real data is, an idle check and robust summaries.

Scripts that read real data take ``--data-dir DIR`` (:func:`add_data_dir`);
its default is ``$GENFORGE_TEST_DATA/<folder>`` when that is set, else
``shared/data/<folder>`` beside the checkout, as in the tests. When the data
is missing, :func:`require_data` exits with code 2 and one line on stderr
saying what is missing and which flag to pass, before any timing starts. Only
the standard library is imported here.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn, Sequence

REPO = Path(__file__).resolve().parents[1]
EXIT_NO_DATA = 2  # exit status of a benchmark whose input data is missing


def default_data_dir(folder: str) -> Path:
    """``$GENFORGE_TEST_DATA/<folder>`` when the variable is set, else ``<checkout>/../shared/data/<folder>``."""
    root = os.environ.get("GENFORGE_TEST_DATA")
    return (Path(root) if root else REPO.parent / "shared" / "data") / folder


def add_data_dir(ap: argparse.ArgumentParser, folder: str, holds: str) -> None:
    """Add ``--data-dir DIR`` (a Path) defaulting to :func:`default_data_dir` of ``folder``."""
    ap.add_argument("--data-dir", type=Path, default=default_data_dir(folder), metavar="DIR",
                    help=f"folder holding {holds} (default: $GENFORGE_TEST_DATA/{folder} when set, else "
                         f"shared/data/{folder} beside the checkout; here {default_data_dir(folder)})")


def fail(message: str, code: int = EXIT_NO_DATA) -> NoReturn:
    """Print ``<script>: <message>`` as one line on stderr and exit with ``code``."""
    print(f"{Path(sys.argv[0]).name}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def _present(folder: Path, name: str) -> bool:
    """``name`` is in ``folder``; a ``.gz`` also counts uncompressed, and ``x-idx3-ubyte`` as ``x.idx3-ubyte``."""
    plain = name.removesuffix(".gz")
    variants = {name, plain, name.replace("-idx", ".idx"), plain.replace("-idx", ".idx")}
    return any((folder / v).is_file() for v in variants)


def missing_data(folder: Path, names: Sequence[str]) -> str | None:
    """What is missing of ``names`` in ``folder`` (``None`` when every file is there)."""
    if not folder.is_dir():
        return f"{folder} is not a folder"
    missing = [n for n in names if not _present(folder, n)]
    return f"{folder} lacks {', '.join(missing)}" if missing else None


def require_data(folder: Path, names: Sequence[str], what: str, alternative: str = "") -> None:
    """Exit 2 with one line on stderr unless ``folder`` holds every file of ``names``.

    Args:
        folder: the ``--data-dir`` given (or its default).
        names: the files needed there.
        what: the data set, e.g. ``"MNIST"``.
        alternative: another way to run, appended as ``", or <alternative>"``.
    """
    problem = missing_data(folder, names)
    if problem is not None:
        holding = ", ".join(names) if problem.endswith("is not a folder") else ("it" if len(names) == 1 else "them")
        fail(f"{what} not found: {problem}; pass --data-dir DIR with the folder that holds {holding}"
             + (f", or {alternative}" if alternative else ""))


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


def cpu_model() -> str:
    """The ``lscpu`` model line (with the bf16 flags that decide ``precision: auto``), or the platform's name."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                 platform.processor() or platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in out.splitlines() if line.startswith("Flags")), [])
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return f"{model} ({', '.join(bf16) if bf16 else 'no bf16 instructions'})"


def print_machine() -> dict[str, float]:
    """Print the CPU model and its measured fp32 and bf16 matmul peaks (GFLOP/s, at torch's thread count)."""
    import torch
    from peak import matmul_peak

    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"cpu: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; matmul peak "
          f"fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s", flush=True)
    return peaks
