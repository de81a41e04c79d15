"""img2img through a model's declared :class:`~genforge.models.capabilities.EditsImages` capability.

    >>> out = img2img_images(model, images, strength=0.6, condition=Condition(text=("red apple",)), seed=0)

Image i draws its noise from a generator seeded ``seed + i`` (as ``genforge inpaint``), so a result does
not depend on the batch size or on the other images of the batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from genforge.models.base import GenerativeModel, SampleOptions, eval_mode
from genforge.models.capabilities import EditsImages
from genforge.models.conditions import Condition
from genforge.models.img2img import check_strength
from genforge.sampling.images import to_uint8
from genforge.sampling.inpaint import seeded_rows

__all__ = ["require_img2img", "img2img_images"]


def require_img2img(model: GenerativeModel, name: str = "") -> EditsImages:
    """``model`` as an :class:`EditsImages`, or a ``ValueError`` saying the family cannot do img2img."""
    if not isinstance(model, EditsImages):
        raise ValueError(f"{name or 'this run'} holds a {model.family} model, which cannot do img2img "
                         f"(families that can: diffusion, latent-diffusion)")
    return model


@torch.no_grad()
def img2img_images(model: GenerativeModel, images: Tensor, *, strength: float, condition: Condition | None = None,
                   seed: int = 0, batch_size: int = 256,
                   options: SampleOptions | dict[str, Any] | None = None) -> Tensor:
    """Regenerate ``images`` (uint8 [B, C, S, S], the model's shape) from ``strength`` of the way to noise under
    ``condition`` (its label or prompt: one, or one per image; None = unconditional) → uint8 [B, C, S, S]."""
    require_img2img(model)
    strength = check_strength(strength)
    opts = model.parse_sample_options(options)
    c, s, _ = model.image_shape
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (c, s, s):
        raise ValueError(f"images must be uint8 [B, {c}, {s}, {s}], got {images.dtype} {list(images.shape)}")
    b = images.shape[0]
    base = (condition or Condition()).expand(b)  # one prompt or label for all, or one per image
    out = []
    with eval_mode(model):
        for start in range(0, b, batch_size):
            x = images[start:start + batch_size]
            cond = dataclasses.replace(base.take(start, start + len(x)), image=x, strength=strength)
            y = model.sample(len(x), condition=cond, generator=seeded_rows(seed, start, len(x)), **vars(opts))
            out.append(to_uint8(y))
    return torch.cat(out)

