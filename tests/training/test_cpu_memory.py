"""retain_freed_memory: glibc serves training-sized blocks from its heap and keeps them once freed.

Read through glibc's own accounting (mallinfo2) rather than page-fault counts, which depend on
the kernel and on the sizes PyTorch's kernels happen to allocate on a given CPU.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, json
from genforge.training.cpu_memory import retain_freed_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
applied = retain_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
size = 48 << 20  # above glibc's largest dynamic mmap threshold (32 MB on 64-bit)
block = libc.malloc(size)
ctypes.memset(block, 1, size)
during = libc.mallinfo2()
libc.free(block)
after = libc.mallinfo2()
print(json.dumps({"applied": applied, "size": size, "mmapped": during.hblkhd, "kept_free": after.fordblks}))
"""


def probe(malloc: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GENFORGE_MALLOC"}
    if malloc is not None:
        env["GENFORGE_MALLOC"] = malloc
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def has_mallinfo2() -> bool:
    version = platform.libc_ver()
    return version[0] == "glibc" and tuple(int(p) for p in version[1].split(".")[:2]) >= (2, 33)


@pytest.mark.skipif(platform.system() != "Linux" or not has_mallinfo2(), reason="glibc >= 2.33 only")
def test_a_freed_48mb_block_stays_in_the_heap_for_the_next_step():
    ours = probe(None)
    assert ours["applied"] is True
    assert ours["mmapped"] < ours["size"]  # served from the heap, not a fresh mapping
    assert ours["kept_free"] >= ours["size"]  # and kept there once freed


@pytest.mark.skipif(platform.system() != "Linux" or not has_mallinfo2(), reason="glibc >= 2.33 only")
def test_default_glibc_maps_and_returns_the_same_block():
    default = probe("default")
    assert default["applied"] is False
    assert default["mmapped"] >= default["size"]
    assert default["kept_free"] < default["size"]
