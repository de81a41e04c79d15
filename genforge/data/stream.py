"""``BatchStream``: an infinite, seeded, exactly resumable stream of training batches.

Epoch ``e`` visits the examples in a permutation drawn from a private
``torch.Generator`` seeded from ``(seed, e)``; random flips of the batch
starting at position ``p`` come from a generator seeded from ``(seed, e, p)``.
Nothing touches the global RNG, so the batches depend only on
``(seed, epoch, position)`` and a stream restored with :meth:`load_state_dict`
yields bit-identical batches to one that never stopped.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import DataError

__all__ = ["BatchStream"]

_PERMUTATION, _FLIP = 0, 1  # stream tags mixed into the seeds


def _generator(*key: int) -> torch.Generator:
    """A torch generator seeded by a well-mixed hash of the non-negative ints in ``key``."""
    entropy = [k & 0xFFFF_FFFF_FFFF_FFFF for k in key]  # negative seeds map to distinct non-negative ones
    lo, hi = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(hi) << 32 | int(lo)) & 0x7FFF_FFFF_FFFF_FFFF)


class BatchStream:
    """Infinite seeded stream of training batches, resumable exactly.

    Args:
        x: examples ``[N, ...]``, normally uint8 images ``[N, C, H, W]``, held in memory.
        y: int labels ``[N]`` or None.
        batch_size: examples per batch ``B``; each epoch yields ``N // B`` batches
            (the incomplete last batch is dropped).
        seed: seed of the epoch permutations and flips.
        hflip: flip each image left-right with probability 1/2 (needs 4-D ``x``).
        text: caption token ids int64 ``[N, L]`` or None.

    Yields:
        ``{"x": [B, C, H, W] (x's dtype), "y": int64 [B], "text": int64 [B, L]}``; ``"y"`` only when
        labelled, ``"text"`` only when captioned.
        Each batch is a fresh tensor (``index_select``), safe to modify.
    """

    def __init__(self, x: Tensor, y: Tensor | None, batch_size: int, *, seed: int, hflip: bool = False,
                 text: Tensor | None = None) -> None:
        if x.dim() < 1 or x.shape[0] == 0:
            raise DataError(f"BatchStream needs at least one example, got x of shape {list(x.shape)}")
        n = x.shape[0]
        if y is not None and y.shape != (n,):
            raise DataError(f"labels y must have shape [{n}] to match x, got {list(y.shape)}")
        if text is not None and (text.dim() != 2 or text.shape[0] != n):
            raise DataError(f"caption ids must have shape [{n}, L] to match x, got {list(text.shape)}")
        if batch_size < 1:
            raise DataError(f"batch_size must be positive, got {batch_size}")
        if batch_size > n:
            raise DataError(f"batch_size {batch_size} is larger than the {n} training examples; lower "
                            f"train.batch_size to at most {n} (or use more data, e.g. raise data.max_train)")
        if hflip and x.dim() != 4:
            raise DataError(f"hflip needs images [N, C, H, W], got x of shape {list(x.shape)}")
        self.x = x.contiguous()
        self.y = None if y is None else y.to(torch.int64).contiguous()
        self.text = None if text is None else text.to(torch.int64).contiguous()
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.hflip = bool(hflip)
        self.epoch = 0
        self.position = 0  # examples of this epoch already yielded
        self._perm: Tensor | None = None
        self._perm_epoch = -1

    @property
    def num_examples(self) -> int:
        return int(self.x.shape[0])

    @property
    def batches_per_epoch(self) -> int:
        return self.num_examples // self.batch_size

    def _permutation(self) -> Tensor:
        if self._perm_epoch != self.epoch:
            g = _generator(self.seed, _PERMUTATION, self.epoch)
            self._perm = torch.randperm(self.num_examples, generator=g)
            self._perm_epoch = self.epoch
        assert self._perm is not None
        return self._perm

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> dict[str, Tensor]:
        b = self.batch_size
        if self.position + b > self.num_examples:  # drop the incomplete tail, start the next epoch
            self.epoch += 1
            self.position = 0
        idx = self._permutation()[self.position:self.position + b]
        x = self.x.index_select(0, idx)
        if self.hflip:
            flip = torch.rand(b, generator=_generator(self.seed, _FLIP, self.epoch, self.position)) < 0.5
            x[flip] = x[flip].flip(-1)
        self.position += b
        batch = {"x": x}
        if self.y is not None:
            batch["y"] = self.y.index_select(0, idx)
        if self.text is not None:
            batch["text"] = self.text.index_select(0, idx)
        return batch

    def state_dict(self) -> dict[str, int]:
        """Where the stream is: plain ints (safe for ``torch.load(weights_only=True)``)."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "num_examples": self.num_examples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; the next batch equals the one an uninterrupted stream would yield.

        ``position`` counts examples, so a different ``batch_size`` still resumes
        inside the same epoch order. A different seed or dataset size cannot
        reproduce the old order: that is warned about, and the stream goes on
        from the saved epoch with its own seed and data.
        """
        try:
            epoch, position = int(state["epoch"]), int(state["position"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"batch stream state must hold integer 'epoch' and 'position', got {state!r}") from None
        if epoch < 0 or position < 0:
            raise DataError(f"batch stream state has a negative epoch/position: {state!r}")
        for key, mine in (("seed", self.seed), ("num_examples", self.num_examples)):
            if key in state and int(state[key]) != mine:
                warnings.warn(f"resuming a batch stream saved with {key}={state[key]} but this one has {key}={mine}; "
                              f"the data order will differ from the interrupted run", stacklevel=2)
        self.epoch, self.position = epoch, position
