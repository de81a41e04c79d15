"""The GPT's key/value caches: the slots of the decode loop, each sequence at its own position
(:class:`SlotCache`), and the scratch cache one window is encoded into by ``GPT.prefill`` (:class:`KVCache`).

Shape legend: L ``n_layer``, B batch, S slots, H ``n_head``, D = ``n_embd / n_head`` head size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genforge.models.native.gpt import gpt_step


def _kv_shape(config: Any, rows: int) -> tuple[int, int, int, int, int]:
    """[L, rows, H, block_size, D] for a GPT config."""
    return (config.n_layer, rows, config.n_head, config.block_size, config.n_embd // config.n_head)


class KVCache:
    """Pre-allocated keys and values of every layer for B windows encoded together: ``k, v`` float
    [L, B, H, block_size, D].

    ``length`` positions are filled; :meth:`GPT._forward` appends to it.
    """

    def __init__(self, config: Any, batch: int, device: torch.device, dtype: torch.dtype) -> None:
        shape = _kv_shape(config, batch)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0


class SlotCache:
    """Keys and values of ``slots`` independent sequences, each at its own position (the decode loop's cache).

    ``k, v`` float [L, S, H, block_size, D]; ``lengths``: positions filled per slot (S ints, kept on the
    host so ``GPT.decode`` sees its rows' layout without a device sync); ``layers``: each layer's ``(k, v)``
    as views, taken once; ``plan``: the model's weights laid out for decoding (:meth:`GPT._decode_plan`);
    ``native``: the fused C step over both (:mod:`genforge.models.native.gpt`), or None where it does not apply.
    """

    def __init__(self, config: Any, slots: int, device: torch.device, dtype: torch.dtype, plan: tuple, *,
                 native: bool = True) -> None:
        self.plan = plan
        shape = _kv_shape(config, slots)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.lengths = [0] * slots
        self.layers = list(zip(self.k.unbind(0), self.v.unbind(0)))  # per layer (k, v) views [S, H, block_size, D]
        self.native = gpt_step(config, plan, self.k, self.v) if native else None


class ConcatCacheDecoder(nn.Module):
    """A GPT step whose cache is passed in and returned (the ONNX graph of ``GPT.onnx_graphs``).

    ``forward(tokens int64 [B, T], past_k, past_v float [L, B, H, P, D])`` → (logits [B, T, V],
    present_k, present_v [L, B, H, P + T, D]); P + T must stay within ``block_size``.
    """

    def __init__(self, gpt: nn.Module) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(self, tokens: Tensor, past_k: Tensor, past_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, T = tokens.shape
        P, H = past_k.shape[3], self.gpt.config.n_head
        tr = self.gpt.transformer
        pos = torch.arange(T, device=tokens.device) + P  # [T]
        x = tr.wte(tokens) + tr.wpe(pos)  # [B, T, C]
        mask = torch.arange(T + P, device=tokens.device)[None, :] <= pos[:, None]  # [T, P + T]
        keys, values = [], []
        for i, block in enumerate(tr.h):
            attn, C = block.attn, x.shape[-1]
            q, k, v = attn.c_attn(block.ln_1(x)).split(C, dim=2)
            q, k, v = (a.reshape(B, T, H, C // H).transpose(1, 2) for a in (q, k, v))  # [B, H, T, D]
            k, v = torch.cat([past_k[i], k], dim=2), torch.cat([past_v[i], v], dim=2)  # [B, H, P + T, D]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + attn.c_proj(y.transpose(1, 2).reshape(B, T, C))
            x = x + block.mlp(block.ln_2(x))
            keys.append(k)
            values.append(v)
        return self.gpt.lm_head(tr.ln_f(x)), torch.stack(keys), torch.stack(values)
