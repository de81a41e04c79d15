"""Small C kernels built on first use with the machine's C compiler, loaded through ctypes.

A kernel is one C file beside this module. :func:`load` compiles it once per machine into
``<cache>/kernels/<name>-<hash>.so`` (the hash covers the source, the compiler, the flags and the CPU's
feature flags, so ``-march=native`` code never runs on another CPU kind), then loads it. Without a C
compiler, on a failed build, or with ``GENFORGE_NATIVE=0``, :func:`load` returns None and callers keep their
PyTorch path: a kernel only ever makes a path faster, never possible. :func:`status` says which happened.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sysconfig
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from genforge.io import atomic_path, default_cache_dir

HERE = Path(__file__).resolve().parent
FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-fno-math-errno", "-ffp-contract=fast"]
THREADS = ["-fopenmp"]  # large matrix products split across cores; without OpenMP: one thread, SIMD only
SERIAL = ["-fopenmp-simd"]
_loaded: dict[str, ctypes.CDLL | None] = {}
_why: dict[str, str] = {}
OFF: list[bool] = []  # non-empty inside ``disabled()``


@contextmanager
def disabled() -> Iterator[None]:
    """Within, :func:`load` returns None, so every caller takes its PyTorch path (tests and benchmarks)."""
    OFF.append(True)
    try:
        yield
    finally:
        OFF.pop()


def compiler() -> str | None:
    """The C compiler to build with: ``$CC``, Python's own, else ``cc``/``gcc``/``clang`` on PATH (or None)."""
    for name in (os.environ.get("CC"), (sysconfig.get_config_var("CC") or "").split(" ")[0], "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(name: str, cc: str, flags: list[str]) -> Path:
    source = HERE / f"{name}.c"
    key = hashlib.sha256(b"\0".join([source.read_bytes(), cc.encode(), " ".join(flags).encode(),
                                     _cpu_flags().encode()])).hexdigest()[:16]
    folder = default_cache_dir() / "kernels"
    target = folder / f"{name}-{key}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:  # concurrent builders each publish a whole file
        done = subprocess.run([cc, *flags, "-o", str(tmp), str(source), "-lm"], capture_output=True, text=True,
                              timeout=120)
        if done.returncode:
            raise OSError(((done.stderr or done.stdout).strip().splitlines() or ["the compiler failed"])[-1])
    return target


def load(name: str) -> ctypes.CDLL | None:
    """The compiled kernel ``name`` (``<name>.c`` here), built on first use; None when it cannot be had."""
    if OFF:
        return None
    if name in _loaded:
        return _loaded[name]
    lib = None
    if os.environ.get("GENFORGE_NATIVE", "1") == "0":
        _why[name] = "off (GENFORGE_NATIVE=0)"
    elif (cc := compiler()) is None:
        _why[name] = "no C compiler (set CC)"
    else:
        for extra, how in ((THREADS, "native (OpenMP)"), (SERIAL, "native (one thread)")):
            try:
                lib = ctypes.CDLL(str(_build(name, cc, FLAGS + extra)))
                _why[name] = how
                break
            except (OSError, subprocess.SubprocessError) as e:
                _why[name] = f"build failed: {e}"
    _loaded[name] = lib
    return lib


def status(name: str) -> str:
    """Why ``name`` is or is not native: ``"native (OpenMP)"``, ``"native (one thread)"``, ``"off (…)"``,
    ``"no C compiler …"``, ``"build failed: …"``."""
    load(name)
    return _why[name]
