"""Classifier-based scores: Inception Score from logits, and mode coverage from predicted labels.

Both take the outputs of a classifier run on generated samples (for MNIST-like
data a domain classifier, for ImageNet-like data Inception v3), not features.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

KL_EPS = 1e-10  # probability mass added to every bin of both histograms in mode_coverage's KL
HIT_FRACTION = 0.1  # default threshold: a class is hit when its share exceeds 0.1 × the uniform share 1/K


def _tensor(x: Any) -> Tensor:
    return (x if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x))).detach().cpu()


def inception_score(logits: Any, splits: int = 10, *, shuffle_seed: int | None = None) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))) from classifier logits (Salimans et al. 2016).

    The N rows are cut into ``splits`` contiguous chunks (rows ``i*N//splits`` to
    ``(i+1)*N//splits``, as torch-fidelity); p(y) is each chunk's mean prediction.
    Everything runs in float64 on ``log_softmax`` outputs, so logits of any size
    give finite values. Result is in [1, K].

    Args:
        logits: unnormalised scores [N, K] (not probabilities; pass log-probabilities if that is what you have).
        splits: number of chunks; N >= splits.
        shuffle_seed: permute rows with this seed before splitting (samples generated
            class by class would otherwise put one class per chunk); ``None`` keeps the order.

    Returns:
        (mean, std) over chunks; std is the population std (``np.std``), as in the reference code.
    """
    x = _tensor(logits)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"logits must be [N, K] with K >= 2 classes, got shape {list(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("logits contain NaN or inf")
    n = x.shape[0]
    if not 1 <= splits <= n:
        raise ValueError(f"splits must be in [1, N={n}], got {splits}")
    if shuffle_seed is not None:
        x = x[torch.randperm(n, generator=torch.Generator().manual_seed(shuffle_seed))]
    log_p = torch.log_softmax(x.double(), dim=1)  # (N, K), log p(y|x)
    scores = []
    for i in range(splits):
        chunk = log_p[i * n // splits : (i + 1) * n // splits]  # (n_i, K)
        log_marginal = torch.logsumexp(chunk, dim=0) - math.log(chunk.shape[0])  # (K,), log p(y)
        kl = (chunk.exp() * (chunk - log_marginal)).sum(dim=1)  # (n_i,); exp underflows to 0, never NaN
        scores.append(math.exp(float(kl.mean())))
    s = np.array(scores)
    return float(s.mean()), float(s.std())


def mode_coverage(
    generated: Any, real_labels: Any, num_classes: int, threshold: float | None = None
) -> dict[str, float | int]:
    """How many classes the generated samples hit, and KL(generated || real) of class histograms.

    Args:
        generated: predicted labels int [N] for generated samples, or classifier
            probabilities / logits [N, K] (reduced to their argmax).
        real_labels: int [M] labels of the reference set.
        num_classes: K; labels must lie in [0, K).
        threshold: a class is *hit* when its share of generated samples is strictly
            above this; default ``HIT_FRACTION / K`` (a tenth of the uniform share).

    Returns:
        ``classes_hit`` (int), ``num_classes``, ``threshold``, ``kl`` = sum_c p_c log(p_c / q_c)
        in nats, with p the generated and q the real histogram after adding ``KL_EPS``
        to every bin and renormalising (so empty real bins give a large finite value),
        ``n_generated`` and ``n_real``.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    threshold = HIT_FRACTION / num_classes if threshold is None else threshold
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold is a share of samples in [0, 1), got {threshold}")
    g = _tensor(generated)
    if g.ndim == 2:
        if g.shape[1] != num_classes:
            raise ValueError(f"generated has {g.shape[1]} columns but num_classes={num_classes}")
        g = g.argmax(dim=1)
    hists = []
    for labels, name in ((g, "generated"), (_tensor(real_labels), "real_labels")):
        if labels.ndim != 1 or labels.numel() == 0 or labels.is_floating_point():
            raise ValueError(f"{name} must be a non-empty integer vector [N], got {labels.dtype} {list(labels.shape)}")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"{name} has labels outside [0, {num_classes}): {int(labels.min())}..{int(labels.max())}")
        hists.append(torch.bincount(labels.long(), minlength=num_classes).double() / labels.numel())  # (K,)
    p, q = hists
    p_s, q_s = ((h + KL_EPS) / (1.0 + num_classes * KL_EPS) for h in (p, q))
    return {
        "classes_hit": int((p > threshold).sum()),
        "num_classes": num_classes,
        "threshold": threshold,
        "kl": float((p_s * (p_s / q_s).log()).sum()),
        "n_generated": int(g.numel()),
        "n_real": int(_tensor(real_labels).numel()),
    }
