"""The super-resolution pipeline: low-resolution images in, upscaled images out, seeded and batched.

    >>> pipe = UpscalePipeline.from_run("runs/mnist-sr")
    >>> big = pipe.upscale(small_uint8, seed=0)          # uint8 [B, C, s, s] → uint8 [B, C, S, S]

``genforge upscale``, the trainer's periodic grids of a super-resolution run (rows: original,
low-resolution input, bicubic, model, per factor) and the ``upscale`` metrics all go through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from genforge.models.base import GenerativeModel, SampleOptions, eval_mode
from genforge.models.capabilities import Upscales
from genforge.sampling.images import ImagePipeline, ImageRequest, save_grid, to_uint8


def downsample_uint8(x: Tensor, factor: int) -> Tensor:
    """The evaluation's low-resolution image: area average of uint8 [B, C, S, S] to S / factor, rounded to uint8."""
    s = x.shape[-1] // factor
    return F.interpolate(x.float(), size=(s, s), mode="area").round().clamp(0, 255).to(torch.uint8)


def bicubic_uint8(low: Tensor, size: int) -> Tensor:
    """The baseline: bicubic upsampling (torch, ``align_corners=False``) of uint8 [B, C, s, s] to ``size``, uint8."""
    up = F.interpolate(low.float() / 255, size=(size, size), mode="bicubic", align_corners=False)
    return to_uint8(up)


class UpscalePipeline(ImagePipeline):
    """Seeded super-resolution from one loaded :class:`~genforge.models.capabilities.Upscales` model.

    Args:
        references: uint8 [N, C, S, S] high-resolution images the periodic grids are drawn from (the
            trainer passes the test split); not needed for :meth:`upscale`.
    """

    def __init__(self, model: GenerativeModel, *, name: str = "", references: Tensor | None = None) -> None:
        if not isinstance(model, Upscales):
            raise ValueError(f"{name or 'this run'} holds a {model.family} model, which does not upscale images "
                             f"(train a super-resolution recipe such as mnist-sr)")
        super().__init__(model, name=name)
        self.references = references

    @property
    def factors(self) -> tuple[int, ...]:
        return self.model.upscale_factors

    def check_side(self, side: int, what: str = "the image") -> int:
        """The factor for a low-resolution side, or a ``ValueError`` naming the sides this model takes."""
        size = self.model.image_shape[-1]
        for f in self.factors:
            if side * f == size:
                return f
        sides = ", ".join(f"{size // f}x{size // f} (x{f})" for f in self.factors)
        raise ValueError(f"{what} is {side}x{side}; this model upscales to {size}x{size} from {sides}")

    @torch.no_grad()
    def upscale(self, low: Tensor, *, seed: int = 0, batch_size: int = 256,
                options: SampleOptions | dict[str, Any] | None = None) -> Tensor:
        """uint8 [B, C, s, s] → uint8 [B, C, S, S], in batches, reproducibly from ``seed``."""
        if low.dtype != torch.uint8 or low.ndim != 4:
            raise ValueError(f"upscale wants uint8 images [B, C, s, s], got {low.dtype} {list(low.shape)}")
        opts = self.model.parse_sample_options(options)
        generator = torch.Generator().manual_seed(seed)
        out = []
        with eval_mode(self.model):
            for start in range(0, low.shape[0], batch_size):
                x = self.model.upscale(low[start:start + batch_size], generator=generator, **vars(opts))
                out.append(to_uint8(x))
        return torch.cat(out)

    def write(self, path: str | Path, request: ImageRequest, options: SampleOptions | None = None, *,
              step: int | None = None) -> Path:
        """A grid of ``request.n`` reference images (seeded pick): rows original, then per factor the
        low-resolution input (nearest-enlarged), bicubic and the model."""
        if self.references is None:
            raise ValueError("a super-resolution grid needs reference images; use `genforge upscale RUN --image IMG`")
        g = torch.Generator().manual_seed(request.seed)
        n = min(request.n, 16, self.references.shape[0])
        hr = self.references[torch.randperm(self.references.shape[0], generator=g)[:n]]
        size = hr.shape[-1]
        rows = [hr]
        for f in self.factors:
            low = downsample_uint8(hr, f)
            rows += [low.repeat_interleave(f, 2).repeat_interleave(f, 3), bicubic_uint8(low, size),
                     self.upscale(low, seed=request.seed, options=options)]
        meta: dict[str, Any] = {"genforge_model": self.model.family, "run": self.name, "seed": request.seed,
                                "rows": "original, then per factor " + ", ".join(f"x{f}" for f in self.factors)
                                        + ": low-resolution input, bicubic, model"}
        if step is not None:
            meta["step"] = step
        return save_grid(torch.cat(rows), path, nrow=n, metadata=meta)
