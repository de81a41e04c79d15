"""Batches of token windows: random ones for training, a tiling for the full validation loss.

:class:`TokenBatches` draws ``B`` windows of ``block_size + 1`` tokens at
uniformly random offsets, as nanoGPT's ``get_batch`` does, but from a private
generator seeded from ``(seed, step)``: no global RNG, and a stream restored
with :meth:`TokenBatches.load_state_dict` yields exactly the windows an
uninterrupted one would.

:func:`eval_windows` tiles a split so that every token but the first is
predicted exactly once (see its docstring for how to weight the losses).
"""

from __future__ import annotations

import warnings
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from .errors import DataError
from .stream import _generator

__all__ = ["TokenBatches", "eval_windows"]

_WINDOWS = 2  # stream tag mixed into the seeds (BatchStream uses 0 and 1)


def _as_ids(ids: Any) -> np.ndarray:
    """1-D integer numpy view of ``ids`` (numpy array, memmap, tensor or list); no copy for arrays."""
    a = ids.detach().cpu().numpy() if isinstance(ids, Tensor) else np.asarray(ids)
    if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise DataError(f"token ids must be a 1-D integer array, got shape {list(a.shape)} of {a.dtype}")
    return a


def _check_length(ids: np.ndarray, block_size: int, batch_size: int, who: str, split: str) -> None:
    if block_size < 1:
        raise DataError(f"{who}: block_size must be positive, got {block_size}")
    if batch_size < 1:
        raise DataError(f"{who}: batch_size must be positive, got {batch_size}")
    need = block_size + 1
    if ids.size < need:
        where = f"the {split} split" if split else "the token ids"
        raise DataError(f"{who}: {where} holds {ids.size} tokens, too few for one window of block_size + 1 = "
                        f"{need} tokens; lower model.block_size to at most {max(ids.size - 1, 0)}, use a longer "
                        f"corpus, or change data.test_fraction")


class TokenBatches:
    """Infinite stream of random training windows, resumable exactly.

    Args:
        ids: 1-D token ids ``[N]`` (e.g. ``TextData.train``, a memmap; read, never copied whole).
        block_size: context length ``T``; each window holds ``T + 1`` tokens (inputs and shifted targets).
        batch_size: windows per batch ``B``.
        seed: seed of the window offsets.
        split: name of the split, for error messages.

    Yields:
        ``{"x": int64 [B, T + 1]}``; window ``b`` is ``ids[s_b : s_b + T + 1]`` with
        ``s_b`` uniform in ``0 .. N - T - 1``, drawn independently (with replacement).

    Raises:
        DataError: fewer than ``T + 1`` tokens, or a non-positive size.
    """

    def __init__(self, ids: Any, block_size: int, batch_size: int, *, seed: int, split: str = "") -> None:
        self.ids = _as_ids(ids)
        _check_length(self.ids, block_size, batch_size, "TokenBatches", split)
        self.block_size = int(block_size)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.step = 0  # batches yielded so far
        self._offsets = np.arange(self.block_size + 1)

    @property
    def num_tokens(self) -> int:
        return int(self.ids.size)

    def __iter__(self) -> TokenBatches:
        return self

    def __next__(self) -> dict[str, Tensor]:
        high = self.num_tokens - self.block_size  # exclusive bound of a window start
        g = _generator(self.seed, _WINDOWS, self.step)
        starts = torch.randint(0, high, (self.batch_size,), generator=g).numpy()
        x = self.ids[starts[:, None] + self._offsets]  # [B, T+1] in the storage dtype
        self.step += 1
        return {"x": torch.from_numpy(x.astype(np.int64))}

    def state_dict(self) -> dict[str, int]:
        """Where the stream is: plain ints (safe for ``torch.load(weights_only=True)``)."""
        return {"step": self.step, "seed": self.seed, "num_tokens": self.num_tokens,
                "block_size": self.block_size, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the next batch equals the one an uninterrupted stream would yield.

        Batch ``k`` depends only on ``(seed, k)`` and the sizes, so this needs just
        ``step``. A different seed, corpus length, block or batch size cannot
        reproduce the old windows: that is warned about, and the stream goes on
        from the saved step with its own settings.
        """
        try:
            step = int(state["step"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"token batch state must hold an integer 'step', got {state!r}") from None
        if step < 0:
            raise DataError(f"token batch state has a negative step: {state!r}")
        for key, mine in (("seed", self.seed), ("num_tokens", self.num_tokens), ("block_size", self.block_size),
                          ("batch_size", self.batch_size)):
            if key in state and int(state[key]) != mine:
                warnings.warn(f"resuming token batches saved with {key}={state[key]} but these have {key}={mine}; "
                              f"the windows will differ from the interrupted run", stacklevel=2)
        self.step = step


def eval_windows(ids: Any, block_size: int, batch_size: int, *, split: str = "") -> Iterator[Tensor]:
    """Tile ``ids`` into windows that predict every token but the first exactly once.

    Window ``k`` is ``ids[k*T : k*T + T + 1]`` (``T = block_size``): it predicts
    its tokens ``1 .. L-1`` (positions ``k*T + 1 .. k*T + L - 1`` of ``ids``) from
    the ones before, so consecutive windows overlap by one token and together
    cover targets ``1 .. N-1`` once each. All windows have ``L = T + 1`` tokens
    except possibly the last, which holds the remaining ``(N - 1) % T`` targets
    and comes alone in a final batch of shape ``[1, L]``.

    The exact loss of the split is ``sum of per-token losses / (N - 1)``: sum the
    token losses of every window (or weight each window's mean by its ``L - 1``
    targets); an unweighted mean over batches would over-weight the short
    last window. Each window's first tokens see less than ``T`` tokens of
    context, like the start of any sequence in training.

    Args:
        ids: 1-D token ids ``[N]``, ``N >= T + 1``.
        block_size: the model's context ``T``.
        batch_size: full windows per yielded batch ``b``.
        split: name of the split, for error messages.

    Yields:
        int64 tensors ``[b, L]``, ``b <= batch_size``, ``L <= T + 1``, in order of position.

    Raises:
        DataError: fewer than ``T + 1`` tokens, or a non-positive size.
    """
    ids = _as_ids(ids)
    _check_length(ids, block_size, batch_size, "eval_windows", split)
    n, t = int(ids.size), int(block_size)
    full, rest = divmod(n - 1, t)  # full windows; targets left for a short last window
    offsets = np.arange(t + 1)
    for first in range(0, full, batch_size):
        starts = np.arange(first, min(first + batch_size, full)) * t
        yield torch.from_numpy(ids[starts[:, None] + offsets].astype(np.int64))
    if rest:
        yield torch.from_numpy(ids[full * t:].astype(np.int64)[None, :])
