"""RePaint (Lugmayr et al. 2022): inpainting with an unconditionally trained diffusion or flow model.

Each reverse step denoises the whole image, then replaces the known region by the known pixels
noised to the new noise level, so the model only ever sees consistent noisy images. To let the
generated region harmonise with the known one, the walk jumps back: every ``jump_length`` steps it
re-noises the image ``jump_length`` levels (with the forward process) and denoises again, ``resamples``
times in all. Model evaluations ≈ ``steps · resamples``.

Noise levels are written as (alpha, sigma) with ``x = alpha x0 + sigma ε``: DDPM ``(sqrt(ab), sqrt(1-ab))``,
flow ``(1 - s, s)``. Going up from level (a1, s1) to (a2, s2) is ``x' = (a2/a1) x + sqrt(s2² - (a2/a1)² s1²) ε``,
exact for both. Positions p = 0 (pure noise) .. steps (clean) index the sampler's levels; step p → p+1 is
the sampler's own step ``p``. Shape legend: B batch, C channels, S side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from genforge.config import FieldError
from genforge.models import rng
from genforge.models.base import SampleOptions
from genforge.models.samplers import DDIMSampler, DDPMSampler, FlowEuler, Sampler

REPAINT_SAMPLERS = {"ddpm": ("ddpm", "ddim"), "flow": ("euler",)}  # single-step samplers (jumps break multistep)


@dataclass(kw_only=True)
class RePaintOptions(SampleOptions):
    """``steps``: sampler levels; ``jump_length``: levels per jump back; ``resamples``: times each jumped
    segment is walked (1 = plain replacement, no jumps); ``sampler``: ddpm / ddim (DDPM objective) or
    euler (flow), None = ddpm / euler; ``guidance`` as in sampling (with a label); ``classify``: noise
    levels a conditional model given no label uses to pick the class from the known pixels (0 = run it
    unconditionally)."""

    steps: int = 25
    jump_length: int = 5
    resamples: int = 4
    sampler: str | None = None
    guidance: float | None = None
    classify: int = 8

    def __post_init__(self) -> None:
        if not 0 <= self.classify <= 1000:
            raise FieldError("classify", f"must be in [0, 1000], got {self.classify}")
        if not 1 <= self.steps <= 10_000:
            raise FieldError("steps", f"must be in [1, 10000], got {self.steps}")
        if not 1 <= self.jump_length <= self.steps:
            raise FieldError("jump_length", f"must be in [1, steps={self.steps}], got {self.jump_length}")
        if not 1 <= self.resamples <= 100:
            raise FieldError("resamples", f"must be in [1, 100], got {self.resamples}")
        if self.guidance is not None and not 0.0 <= self.guidance <= 100.0:
            raise FieldError("guidance", f"must be in [0, 100], got {self.guidance}")


def jump_schedule(steps: int, jump_length: int, resamples: int) -> list[int]:
    """Positions visited, from 0 (noise) to ``steps`` (clean): up one per step; at every multiple of
    ``jump_length`` back down ``jump_length`` positions, ``resamples - 1`` times."""
    jumps = {p: resamples - 1 for p in range(jump_length, steps + 1, jump_length)}
    path, p = [0], 0
    while p < steps:
        p += 1
        path.append(p)
        while jumps.get(p, 0) > 0:
            jumps[p] -= 1
            for _ in range(jump_length):
                p -= 1
                path.append(p)
            for _ in range(jump_length - 1):  # walk back up to just below the jump point
                p += 1
                path.append(p)
            p += 1
            path.append(p)
    return path


def levels(sampler: Sampler, alphas_cumprod: Tensor | None) -> list[tuple[float, float]]:
    """(alpha, sigma) at every position 0..steps of ``sampler``."""
    if isinstance(sampler, FlowEuler):
        return [(1.0 - float(s), float(s)) for s in sampler.sigmas]
    ab = [float(alphas_cumprod[int(t)]) for t in sampler.timesteps] + [1.0]
    return [(math.sqrt(a), math.sqrt(1.0 - a)) for a in ab]


def repaint(predict: Callable[[Tensor, Tensor], Tensor], sampler: Sampler, lv: list[tuple[float, float]],
            x0: Tensor, fill: Tensor, path: list[int], generator: rng.Generator) -> Tensor:
    """Walk ``path`` with ``sampler`` on images x0 [B, C, S, S] in [-1, 1] (the known pixels; ``fill`` bool
    [B, 1, S, S] marks those to restore) → [B, C, S, S] in [-1, 1]; ``predict(x, fed)`` is the model.

    Noise is drawn on the CPU from ``generator``, so a seed reproduces the result anywhere."""
    if not isinstance(sampler, (DDPMSampler, DDIMSampler, FlowEuler)):
        raise ValueError(f"RePaint needs a single-step sampler, not {sampler.name!r}")
    b, device = x0.shape[0], x0.device

    def noise() -> Tensor:
        return rng.randn(tuple(x0.shape), generator).to(device)

    def known(p: int) -> Tensor:
        a, s = lv[p]
        return a * x0 + s * noise()

    x = torch.where(fill, noise(), known(0))
    for prev, p in zip(path, path[1:]):
        if p == prev + 1:  # denoise one level, then put the known region back at the new level
            fed = torch.full((b,), float(sampler.timesteps[prev]), device=device)
            x = sampler.step(predict(x, fed), prev, x, generator)
            x = torch.where(fill, x, known(p) if p < len(lv) - 1 else x0)
        else:  # jump back: re-noise one level with the forward process
            (a1, s1), (a2, s2) = lv[prev], lv[p]
            ratio = a2 / a1 if a1 > 0 else 0.0
            x = ratio * x + math.sqrt(max(s2 ** 2 - (ratio * s1) ** 2, 0.0)) * noise()
    return x
