"""img2img by SDEdit (Meng et al. 2021) for a diffusion sampler: noise a source to the level of one of the
sampler's steps and run the sampler from there under a (new) condition.

With ``steps`` sampler steps and a ``strength`` s in [0, 1], the last ``int(s · steps)`` steps run (as
diffusers' img2img pipelines count them): s = 0 runs none (the source comes back), s = 1 runs them all from
pure noise (the same as sampling, seed for seed). The source is noised to the level the first step that
runs expects: x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε for the DDPM objective, x_σ = (1 - σ) x0 + σ ε for flow.

Shape legend: B batch, then the denoised space [C, S, S] (pixels or latents).
"""

from __future__ import annotations

import math

from torch import Tensor

from genforge.config import FieldError
from genforge.models.samplers import FlowEuler, Sampler

__all__ = ["check_strength", "first_step", "noised_to"]


def check_strength(strength: float) -> float:
    """``strength`` as a float in [0, 1], or a ``FieldError`` naming it."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise FieldError("strength", f"must be a number in [0, 1], got {strength!r}")
    return float(strength)


def first_step(steps: int, strength: float) -> int:
    """The index of the first sampler step that runs: ``steps - int(strength · steps)`` (``steps`` = none)."""
    return steps - int(check_strength(strength) * steps)


def noised_to(sampler: Sampler, x0: Tensor, noise: Tensor, k: int) -> Tensor:
    """``x0`` [B, ...] noised with ``noise`` (like x0, standard normal) to the level sampler step ``k`` is fed;
    ``k`` = 0 returns the noise itself (what sampling starts from), ``k`` = steps returns x0."""
    if k <= 0:
        return noise
    if k >= sampler.steps:
        return x0
    if isinstance(sampler, FlowEuler):
        sigma = float(sampler.sigmas[k])
        return (1 - sigma) * x0 + sigma * noise
    ab = float(sampler.schedule.alphas_cumprod[int(sampler.timesteps[k])])
    return math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise
