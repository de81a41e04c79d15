"""The trainer's evaluation of a run that embeds images and captions (a ``clip`` run), on the held-out split:
the cross-entropy of each image's caption among all M distinct held-out captions at the run's temperature
(nats; ln M is chance), and the top-1 R-precision of each image's caption among ``k`` of them (the measure
the ``align`` stage uses, in the run's own embeddings).

Shape legend: N held-out image–caption pairs, E embedding width, M distinct captions.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from genforge.data import ImageData
from genforge.metrics.text_image import r_precision
from genforge.models.base import GenerativeModel
from genforge.models.clip import MAX_LOGIT_SCALE

__all__ = ["CAPTION_LOSS", "RETRIEVAL_K", "retrieval_hook"]

RETRIEVAL_K = 32  # candidates per image (fewer when the split has fewer distinct captions)
CAPTION_LOSS = "eval/caption_loss"  # what the best model is kept on


def retrieval_hook(data: ImageData, *, seed: int = 0) -> Callable[[GenerativeModel, int], dict[str, Any]]:
    """A trainer ``evaluate`` hook returning ``{"eval/caption_loss": nats, "eval/r_precision@k": top-1 rate in
    [0, 1]}`` (see the module docstring); the R-precision candidates are drawn from ``seed`` at every call."""
    captions = list(data.test_text or [])
    if not captions:
        raise ValueError(f"dataset {data.name!r} has no held-out captions to evaluate a text–image encoder on")
    pool = sorted(set(captions))  # [M] distinct captions
    index = {c: i for i, c in enumerate(pool)}
    truth = torch.tensor([index[c] for c in captions])  # [N]
    k = min(RETRIEVAL_K, len(pool))

    def evaluate(model: GenerativeModel, step: int) -> dict[str, Any]:
        tok = model.tokenizer
        images = model.embed_images(data.test_x)  # [N, E]
        texts = model.embed_texts(tok.encode(pool, strict=False))  # [M, E]
        scale = float(model.logit_scale.detach().exp().clamp(max=MAX_LOGIT_SCALE))
        loss = F.cross_entropy(scale * images @ texts.T, truth)  # [N, M] logits; a shared caption is one class
        hit = r_precision(images, truth, texts, k=k, generator=torch.Generator().manual_seed(seed))
        return {CAPTION_LOSS: float(loss), f"eval/r_precision@{k}": hit}

    return evaluate
