"""Inpainting through a model's declared :class:`~genforge.models.capabilities.Inpaints` capability.

    >>> out = inpaint_images(model, images, fill, seed=0)    # uint8 [B, C, S, S] in and out

Image i draws its randomness from a generator seeded ``seed + i``, so a result does not depend on
the batch size or on which other images share the batch. Known pixels are copied from the input
after the model's output is quantised, so they come back bit-identical.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from genforge.models.base import GenerativeModel, SampleOptions, eval_mode
from genforge.models.capabilities import Inpaints
from genforge.models.conditions import Condition
from genforge.models.rng import RowGenerators
from genforge.sampling.images import to_uint8


def require_inpaints(model: GenerativeModel, name: str = "") -> Inpaints:
    """``model`` as an :class:`Inpaints`, or a ``ValueError`` saying the family cannot inpaint."""
    if "inpaint" not in model.capabilities():
        raise ValueError(f"{name or 'this run'} holds a {model.family} model, which cannot inpaint "
                         f"(families that can: diffusion, vae, gan)")
    return model


def seeded_rows(seed: int, start: int, n: int) -> RowGenerators:
    """One generator per row: row j of the batch starting at global index ``start`` is seeded ``seed + start + j``."""
    return RowGenerators([(torch.Generator().manual_seed(seed + start + j), 1) for j in range(n)])


@torch.no_grad()
def inpaint_images(model: GenerativeModel, images: Tensor, fill: Tensor, *, labels: Any = None, seed: int = 0,
                   batch_size: int = 256, options: SampleOptions | dict[str, Any] | None = None) -> Tensor:
    """Restore the ``fill`` pixels of ``images``.

    Args:
        images: uint8 [B, C, S, S] of the model's shape.
        fill: bool [B, 1, S, S], True = restore (at least one per image).
        labels: None (the model decides the class), an int, B labels, or a :class:`Condition` (a label or a
            prompt: one, or one per image).
        options: the family's ``inpaint_options``.

    Returns:
        uint8 [B, C, S, S]; where ``fill`` is False, equal to ``images``.
    """
    painter = require_inpaints(model)
    opts = painter.parse_inpaint_options(options)
    c, s, _ = model.image_shape
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (c, s, s):
        raise ValueError(f"images must be uint8 [B, {c}, {s}, {s}], got {images.dtype} {list(images.shape)}")
    if fill.dtype != torch.bool or tuple(fill.shape) != (images.shape[0], 1, s, s):
        raise ValueError(f"fill must be bool [{images.shape[0]}, 1, {s}, {s}], got {fill.dtype} {list(fill.shape)}")
    if not bool(fill.flatten(1).any(1).all()):
        raise ValueError("every mask needs at least one pixel to fill")
    if isinstance(labels, Condition):
        labels = labels.expand(images.shape[0])
    elif labels is not None and not isinstance(labels, int):
        labels = torch.as_tensor(labels, dtype=torch.long)
    out = []
    with eval_mode(model):
        for start in range(0, images.shape[0], batch_size):
            x, f = images[start:start + batch_size], fill[start:start + batch_size]
            cond = labels[start:start + len(x)] if isinstance(labels, Tensor) else labels
            cond = cond.take(start, start + len(x)) if isinstance(cond, Condition) else cond
            y = painter.inpaint(x.float() / 255, f, condition=cond, generator=seeded_rows(seed, start, len(x)),
                                **vars(opts))
            out.append(torch.where(f, to_uint8(y), x))
    return torch.cat(out)
