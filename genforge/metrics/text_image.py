"""Text–image alignment from embeddings: CLIP score and R-precision (the contrastive loss is the ``clip``
family's training loss, :func:`genforge.models.clip.contrastive_loss`).

Embeddings are rows of float tensors, L2-normalised by the caller (cosine = dot product). Shape legend:
N image–caption pairs, D embedding width, M captions in a pool, k candidates per query.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["clip_score", "r_precision"]


def clip_score(images: Tensor, texts: Tensor) -> float:
    """CLIPScore (Hessel et al. 2021, as torchmetrics computes it): mean over pairs of max(100 · cos, 0)
    between image i [N, D] and its caption i [N, D]."""
    if images.shape != texts.shape:
        raise ValueError(f"images {list(images.shape)} and texts {list(texts.shape)} must pair row by row")
    return float((100 * (images * texts).sum(1)).clamp(min=0).mean())


def r_precision(images: Tensor, truth: Tensor, pool: Tensor, *, k: int = 100, generator: torch.Generator | None = None,
                same: Tensor | None = None) -> float:
    """Top-1 R-precision (Xu et al. 2018, AttnGAN): for each image, its true caption is ranked among k
    candidates (itself and k - 1 others drawn without replacement from ``pool``); the share ranked first.

    Args:
        images: [N, D] image embeddings.
        truth: int64 [N], the pool row of each image's true caption.
        pool: [M, D] caption embeddings (M ≥ k).
        k: candidates per image.
        generator: draws the k - 1 others per image.
        same: optional int64 [M] caption ids: candidates whose id equals the true caption's (the same text
            under another row) are never drawn as "others".

    Returns:
        The share in [0, 1]; 1 / k is chance.
    """
    n, m = images.shape[0], pool.shape[0]
    if m < k:
        raise ValueError(f"R-precision needs at least k={k} captions in the pool, got {m}")
    hits = 0
    for i in range(n):
        t = int(truth[i])
        allowed = torch.ones(m, dtype=torch.bool)
        allowed[t] = False
        if same is not None:
            allowed &= same != same[t]
        others = torch.nonzero(allowed).flatten()
        if others.numel() < k - 1:
            raise ValueError(f"R-precision needs {k - 1} other captions for image {i}, only {others.numel()} differ")
        pick = others[torch.randperm(others.numel(), generator=generator)[: k - 1]]
        candidates = torch.cat([pool[t:t + 1], pool[pick]])  # [k, D], the true caption first
        scores = candidates @ images[i]  # [k]
        hits += int(scores[0] > scores[1:].max())  # a tie is a miss
    return hits / n
