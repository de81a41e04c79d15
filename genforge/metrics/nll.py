"""Likelihood units: nats → bits, bits per dimension, perplexity, bits per character.

Models report negative log-likelihoods in nats (natural log). For images,
bits/dim is only comparable to published numbers when the NLL is that of the
discrete 8-bit data (dequantisation and the [0, 255] → model-scale Jacobian
already included by the model); this module only changes units.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

LN2 = math.log(2.0)


def nats_to_bits(nats: Any) -> Any:
    """Divide by ln 2; works on floats, tensors and arrays alike."""
    return nats / LN2


def _finite_float(x: Any, name: str) -> float:
    v = float(x.item() if isinstance(x, (torch.Tensor, np.ndarray)) else x)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def bits_per_dim(nll_nats: Any, dims: int) -> float:
    """Mean NLL per example [B] (nats) over ``dims`` dimensions → bits per dimension.

    Args:
        nll_nats: per-example negative log-likelihood in nats, [B] (tensor, array or list).
        dims: dimensions per example, e.g. C × H × W = 3072 for CIFAR-10.
    """
    t = torch.as_tensor(nll_nats).detach()
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"nll_nats must be a non-empty vector [B] of per-example NLLs, got shape {list(t.shape)}")
    if dims < 1:
        raise ValueError(f"dims must be >= 1, got {dims}")
    mean = _finite_float(t.double().mean(), "mean nll_nats")
    return mean / (dims * LN2)


def perplexity(mean_nll_nats: Any) -> float:
    """exp(mean NLL per token in nats); +inf when that overflows float64."""
    v = _finite_float(mean_nll_nats, "mean_nll_nats")
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


def bits_per_char(total_nll_nats: Any, n_chars: int) -> float:
    """Total NLL in nats of a text → bits per character of that text (``n_chars`` characters, not tokens)."""
    if n_chars < 1:
        raise ValueError(f"n_chars must be >= 1, got {n_chars}")
    return _finite_float(total_nll_nats, "total_nll_nats") / (n_chars * LN2)
