"""The GPT's key/value caches: one batch decoded together (:class:`KVCache`), or independent slots at their own
positions for continuous batching (:class:`SlotCache`).

Shape legend: L ``n_layer``, B batch, S slots, H ``n_head``, D = ``n_embd / n_head`` head size.
"""

from __future__ import annotations

from typing import Any

import torch


def _kv_shape(config: Any, rows: int) -> tuple[int, int, int, int, int]:
    """[L, rows, H, block_size, D] for a GPT config."""
    return (config.n_layer, rows, config.n_head, config.block_size, config.n_embd // config.n_head)


class KVCache:
    """Pre-allocated keys and values of every layer: ``k, v`` float [L, B, H, block_size, D].

    ``length`` positions are filled; :meth:`GPT._forward` appends to it.
    """

    def __init__(self, config: Any, batch: int, device: torch.device, dtype: torch.dtype) -> None:
        shape = _kv_shape(config, batch)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0


class SlotCache:
    """Keys and values of ``slots`` independent sequences, each at its own position (continuous batching).

    ``k, v`` float [L, S, H, block_size, D]; ``lengths`` int64 [S] positions filled per slot;
    ``plan``: the model's weights laid out for decoding (:meth:`GPT._decode_plan`), taken once.
    """

    def __init__(self, config: Any, slots: int, device: torch.device, dtype: torch.dtype, plan: tuple) -> None:
        self.plan = plan
        shape = _kv_shape(config, slots)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.lengths = torch.zeros(slots, dtype=torch.long, device=device)
