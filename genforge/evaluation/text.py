"""Held-out likelihood of a language model: loss, perplexity and bits per character.

Token-averaged over the whole split (never a few random windows): the ids are
cut into windows that make every token except the first a prediction target
exactly once (``genforge.data.eval_windows``), and the summed negative
log-likelihood is divided by the number of targets.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from genforge.data import TextData, eval_windows
from genforge.models.base import GenerativeModel


def target_chars(data: TextData) -> int:
    """Characters the validation targets span: the split's characters minus those of its first token,
    which is context only and never scored (the denominator of bits per character)."""
    return data.val_chars - len(data.tokenizer.decode([int(data.val[0])]))


@torch.inference_mode()
def heldout_nll(model: GenerativeModel, ids: np.ndarray, *, block_size: int, batch_size: int = 64,
                chars: int | None = None, prefix: str = "val") -> dict[str, float]:
    """Negative log-likelihood of ``ids`` under ``model``, over every token.

    Args:
        model: a language model with ``token_nll({"x": [B, T+1]}) -> [B, T]`` nats.
        ids: 1-D token ids of the held-out split.
        block_size: the model's context length.
        batch_size: windows per forward pass.
        chars: characters the targets span (:func:`target_chars`); gives bits
            per character when known.
        prefix: key prefix of the returned metrics.

    Returns:
        ``{prefix/loss: nats per token, prefix/perplexity, prefix/tokens: targets counted,
        prefix/bpc: bits per character (when ``chars``)}``.
    """
    total, count = 0.0, 0
    for x in eval_windows(ids, block_size, batch_size):  # int64 [b, L]
        nll = model.token_nll({"x": x})  # [b, L-1] nats
        total += float(nll.double().sum())
        count += nll.numel()
    if count == 0:
        raise ValueError(f"the {prefix} split has fewer than 2 tokens: nothing to evaluate")
    loss = total / count
    out = {f"{prefix}/loss": loss, f"{prefix}/perplexity": math.exp(min(loss, 700.0)), f"{prefix}/tokens": count}
    if chars:
        out[f"{prefix}/bpc"] = total / (chars * math.log(2))
    return out
