"""The fused GPT decode step of ``gpt_step.c`` behind a Python call (see that file for the arithmetic).

:func:`gpt_step` returns a :class:`GPTStep` for a model's decode plan and slot cache when the kernel is
available and applies (float32 tensors on the CPU), else None; ``GPT.decode`` then keeps its PyTorch path.
Shape legend: B rows, V vocabulary, L layers, S slots, H heads, D head size.
"""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Any, Callable

import torch
from torch import Tensor

from genforge.models import native
from genforge.models.native import sampling

_I64 = ctypes.c_int64


class GPTStep:
    """One decode step of B rows through the C kernel; holds the pointer table of weights and caches.

    The tensors behind the pointers (the plan's weights and the caches ``k``, ``v``) must stay alive and in
    place as long as this object is used: the slot cache that owns both owns this too.
    """

    def __init__(self, lib: ctypes.CDLL, config: Any, plan: tuple, k: Tensor, v: Tensor) -> None:
        wte, wpe, layers, (lnf_w, lnf_b) = plan
        tensors = [wte, wpe, lnf_w, lnf_b, *(t for layer in layers for t in layer), k, v]
        self.dims = (_I64 * 6)(config.n_layer, config.n_embd, config.n_head, config.vocab_size,
                               config.block_size, k.shape[1])
        self.ptrs = (ctypes.c_void_p * len(tensors))(*(None if t is None else t.data_ptr() for t in tensors))
        self.vocab, self.block = config.vocab_size, config.block_size
        self.shape = tuple(self.dims)[:5]  # (L, C, H, V, block): what the thread race is remembered by
        self._out_rows = [(_I64 * m)(*range(m)) for m in range(k.shape[1] + 1)]  # every row's logits, B ≤ S
        self.config, self.plan = config, plan
        self._set: tuple[int, int] | None = (1, 1)  # (prefill, step) threads, 0 = PyTorch; None: race per thread
        self._race_with: tuple | None = None
        self.fn_lib, self.fn = lib, lib.gf_gpt_forward
        self.fn.restype = ctypes.c_int
        self.fn.argtypes = [ctypes.c_void_p] * 2 + [_I64] + [ctypes.c_void_p] * 3 + [_I64] + [ctypes.c_void_p] * 2 + [_I64]
        lib.gf_gpt_run.restype = ctypes.c_int
        lib.gf_gpt_run.argtypes = [ctypes.c_void_p] * 2 + [_I64] * 4 + [ctypes.c_float] + [ctypes.c_void_p] * 4 + [_I64]
        lib.gf_max_threads.restype = ctypes.c_int
        self.max_threads = int(lib.gf_max_threads())

    def _threads(self) -> tuple[int, int]:
        """(prefill threads, step threads), 0 = PyTorch: set, else raced once per model shape and calling thread
        (an OpenMP team is slower under a thread other than the one that started it: a server's engine thread
        can get a different answer from the main thread)."""
        if self._set is not None:
            return self._set
        key = (self.shape, threading.get_ident())  # (looked up at every step: nothing rebuilt here)
        if key not in _CHOICES:
            _CHOICES[key] = _race(self, *self._race_with[:2], self._race_with[2]())
        return _CHOICES[key]

    @property
    def prefill_threads(self) -> int:
        return self._threads()[0]

    @prefill_threads.setter
    def prefill_threads(self, n: int) -> None:
        self._set = (n, self._threads()[1])

    @property
    def step_threads(self) -> int:
        return self._threads()[1]

    @step_threads.setter
    def step_threads(self, n: int) -> None:
        self._set = (self._threads()[0], n)

    @property
    def use_prefill(self) -> bool:
        return self.prefill_threads > 0

    @property
    def use_step(self) -> bool:
        return self.step_threads > 0

    def _run(self, tokens: Tensor, slots: list[int], positions: list[int], out_rows: list[int] | None,
             threads: int) -> Tensor:
        """The C forward over rows (token, slot, position) → logits float32 [len(out_rows), V] (None: every row)."""
        B = len(slots)
        M = B if out_rows is None else len(out_rows)
        if tokens.dtype != torch.int64 or tokens.device.type != "cpu" or not tokens.is_contiguous():
            tokens = tokens.to("cpu", torch.int64).contiguous()
        out = torch.empty(M, self.vocab)  # (M, V)
        failed = self.fn(self.dims, self.ptrs, B, tokens.data_ptr(), (_I64 * B)(*slots), (_I64 * B)(*positions),
                         M, self._out_rows[M] if out_rows is None else (_I64 * M)(*out_rows), out.data_ptr(), threads)
        if failed == 2:
            raise ValueError(f"token ids must be in [0, {self.vocab - 1}] and positions within the context")
        if failed:
            raise MemoryError("the native GPT step could not allocate its scratch memory")
        return out

    def step(self, tokens: Tensor, slots: list[int], lengths: list[int]) -> Tensor:
        """Logits float32 [B, V] of tokens int64 [B], each appended to its slot of ``slots`` at the slot's
        length in ``lengths`` (the slot cache's list, advanced here); writes the rows' keys and values."""
        positions = [lengths[s] for s in slots]
        if max(positions) >= self.block:
            raise ValueError(f"a sequence of {max(positions) + 1} tokens exceeds block_size={self.block}")
        out = self._run(tokens, slots, positions, None, self.step_threads)
        for s in slots:
            lengths[s] += 1
        return out

    @property
    def runs(self) -> bool:
        """Whether :meth:`run` is available: the fused step is the faster path and the fused draw is built."""
        return self.use_step and sampling.draw_address() is not None

    def run(self, token: int, slot: int, lengths: list[int], n: int, temperature: float, u: Tensor) -> Tensor:
        """``n`` steps of one sequence in one call: ``token`` appended to ``slot`` at its length, then each
        token drawn (as ``next_tokens`` draws one: the fused draw at ``temperature`` from uniform ``u[i]``,
        float32 [n], or the argmax at 0) appended after it → the n drawn tokens int64 [n]. Advances
        ``lengths[slot]`` by n. Needs :attr:`runs`."""
        at = lengths[slot]
        if at + n > self.block:
            raise ValueError(f"a sequence of {at + n} tokens exceeds block_size={self.block}")
        u = u.to(torch.float32).contiguous()
        if temperature != 0 and u.numel() < n:
            raise ValueError(f"{n} steps need {n} uniform numbers, got {u.numel()}")
        tokens, logits = torch.empty(n, dtype=torch.int64), torch.empty(self.vocab)  # (n,), (V,) scratch
        failed = self.fn_lib.gf_gpt_run(self.dims, self.ptrs, token, slot, at, n, ctypes.c_float(temperature),
                                        u.data_ptr(), sampling.draw_address(), tokens.data_ptr(), logits.data_ptr(),
                                        self.step_threads)
        if failed == 2:
            raise ValueError(f"token ids must be in [0, {self.vocab - 1}] and positions within the context")
        if failed:
            raise MemoryError("the native GPT step could not allocate its scratch memory")
        lengths[slot] += n
        return tokens

    def prefill(self, ids: Tensor, slots: list[int], lengths: list[int]) -> Tensor:
        """Encode windows ids int64 [n, P] into positions 0..P-1 of ``slots`` → last-position logits [n, V];
        sets the slots' ``lengths`` to P."""
        n, P = ids.shape
        rows = [s for s in slots for _ in range(P)]  # row-major over (sequence, position)
        out = self._run(ids.reshape(-1), rows, list(range(P)) * n, [i * P + P - 1 for i in range(n)],
                        self.prefill_threads)  # (n, V)
        for s in slots:
            lengths[s] = P
        return out

    def calibrate(self, prefill_torch: Callable, decode_torch: Callable, scratch: Callable[[], Any]) -> None:
        """Time this kernel on one thread and on all of OpenMP's against the PyTorch paths (``(ids, cache,
        slots) → logits``, ``(tokens, cache, slots) → logits``) on ``scratch()``, a new one-slot cache without
        a kernel, once per model shape and thread in a process, at the first use on that thread; keep the
        fastest for prefill and for steps (:attr:`prefill_threads`, :attr:`step_threads`; 0 = PyTorch)."""
        self._set, self._race_with = None, (prefill_torch, decode_torch, scratch)


_CHOICES: dict[tuple, tuple[int, int]] = {}  # (model shape, thread) → (prefill threads, step threads), 0 = PyTorch


def _best(fn: Callable[[], Any], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _race(step: GPTStep, prefill_torch: Callable, decode_torch: Callable, cache: Any) -> tuple[int, int]:
    """(prefill threads, step threads), 0 for PyTorch: the fastest of PyTorch, the kernel on one thread and on
    every thread, timed on a window of 3/4 of the context (at most 64) and up to three steps after it."""
    cfg = step.config
    twin = GPTStep(step.fn_lib, cfg, step.plan, cache.k, cache.v)
    P = max(1, min(64, cfg.block_size * 3 // 4, cfg.block_size - 3))
    after = min(3, cfg.block_size - P)  # steps that still fit the context (none for a context of 1)
    ids, slot = torch.zeros(1, P, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    counts = sorted({1, twin.max_threads})

    def steps(run: Callable[[], Any]) -> Callable[[], None]:
        def go() -> None:
            cache.lengths[0] = P
            for _ in range(after):
                run()
        return go

    def native(threads: int, prefill: bool) -> Callable[[], Any]:
        def go() -> Any:
            twin.prefill_threads = twin.step_threads = threads
            return twin.prefill(ids, [0], cache.lengths) if prefill else twin.step(slot, [0], cache.lengths)
        return go if prefill else steps(go)

    with torch.inference_mode():
        prefill = {0: _best(lambda: prefill_torch(ids, cache, slot))}
        prefill.update({n: _best(native(n, True)) for n in counts})
        decode = {0: _best(steps(lambda: decode_torch(slot, cache, slot)))}
        decode.update({n: _best(native(n, False)) for n in counts})
    return min(prefill, key=prefill.get), min(decode, key=decode.get)


def gpt_step(config: Any, plan: tuple, k: Tensor, v: Tensor) -> GPTStep | None:
    """The native step for this plan and cache, or None (kernel unavailable, not float32, not CPU)."""
    tensors = [t for t in (plan[0], plan[1], *plan[3], *(t for layer in plan[2] for t in layer), k, v)
               if t is not None]
    if any(t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous() for t in tensors):
        return None
    lib = native.load("gpt_step")
    return None if lib is None else GPTStep(lib, config, plan, k, v)
