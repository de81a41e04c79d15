"""Interpolation in a model's latent space (:class:`~genforge.models.capabilities.LatentSpace`).

Between two seeds: the latents each seed's plain sample starts from (``draw_latents`` with a
generator seeded like ``genforge sample --seed``), walked by spherical interpolation (slerp; a
Gaussian latent's norm concentrates near sqrt(dim), which linear interpolation would shrink), and
rendered deterministically, so the end points are exactly those seeds' samples. For diffusion
models the latent is the initial noise, rendered by an ODE sampler (DDIM η=0, DPM-Solver++ or flow
Euler). Between two labels the class is interpolated too, as class weights (a soft one-hot).
Between two real images: their latents from the family's inversion (VAE encoder; DDIM / flow ODE
inversion) instead of seeds.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from genforge.config import FieldError
from genforge.models.base import GenerativeModel, eval_mode
from genforge.models.capabilities import LatentSpace
from genforge.sampling.images import to_uint8


def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation per row of a, b [n, ...] at t in [0, 1] (linear when they are parallel)."""
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1, 1))[:, None]  # [n, 1]
    so = torch.sin(omega)
    linear = so.abs() < 1e-6
    wa = torch.where(linear, torch.full_like(so, 1 - t), torch.sin((1 - t) * omega) / torch.where(linear, 1, so))
    wb = torch.where(linear, torch.full_like(so, t), torch.sin(t * omega) / torch.where(linear, 1, so))
    return (wa * fa + wb * fb).to(a.dtype).view_as(a)


def require_latents(model: GenerativeModel, name: str = "", *, invert: bool = False) -> LatentSpace:
    """``model`` as a :class:`LatentSpace` (an :class:`Inverts` with ``invert``), or a ``ValueError``."""
    if invert and "invert" not in model.capabilities():
        raise ValueError(f"{name or 'this run'} holds a {model.family} model, which cannot map real images to "
                         f"latents (families that can: vae, diffusion); interpolate between seeds instead")
    if "interpolate" not in model.capabilities():
        raise ValueError(f"{name or 'this run'} holds a {model.family} model, which has no latent space to "
                         f"interpolate (families that have one: gan, vae, diffusion)")
    return model


def _class_weights(y0: Tensor | None, y1: Tensor | None, t: float, k: int) -> Tensor | None:
    """Labels at t: the int labels themselves where both ends agree (or t is an end), else weights [n, K]."""
    if y0 is None:
        return None
    if t == 0.0 or bool((y0 == y1).all()):
        return y0
    if t == 1.0:
        return y1
    eye = torch.eye(k, device=y0.device)
    return (1 - t) * eye[y0] + t * eye[y1]


@torch.no_grad()
def interpolate(model: GenerativeModel, steps: int, *, seeds: tuple[int, int] = (0, 1), labels: tuple[Any, Any] = (None, None),
                images: tuple[Tensor, Tensor] | None = None, options: dict[str, Any] | None = None) -> Tensor:
    """``steps`` images from one end to the other: uint8 [steps, C, S, S].

    Args:
        seeds: the seeds whose latents are the ends (unused with ``images``).
        labels: the class of each end (conditional models); None = the seed's own random label (seeds) or
            required (images of a conditional model).
        images: two uint8 [C, S, S] real images to interpolate between (families that invert).
        options: the family's sample options for rendering (a deterministic sampler).
    """
    if not 2 <= steps <= 256:
        raise FieldError("steps", f"must be in [2, 256], got {steps}")
    space = require_latents(model, invert=images is not None)
    options = dict(options or {})
    k = model.num_classes
    with eval_mode(model):
        if images is None:
            ends = []
            for seed, label in zip(seeds, labels):
                g = torch.Generator().manual_seed(seed)
                ends.append(space.draw_latents(1, label, g))
            (z0, y0), (z1, y1) = ends
        else:
            if k and None in labels:
                raise ValueError("a conditional model needs the label of each image (--labels A,B)")
            dev = model.device
            y0, y1 = (None, None) if not k else (torch.tensor([labels[0]], device=dev), torch.tensor([labels[1]], device=dev))
            z0 = space.invert(images[0][None].float().div(255), y0, **options)
            z1 = space.invert(images[1][None].float().div(255), y1, **options)
        frames = []
        for i in range(steps):
            t = i / (steps - 1)
            z = z0 if t == 0 else z1 if t == 1 else slerp(z0, z1, t)
            frames.append(to_uint8(space.render(z, _class_weights(y0, y1, t, k), **options)))
    return torch.cat(frames)
