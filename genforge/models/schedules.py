"""Noise schedules for diffusion and flow models, as small objects (samplers: ``genforge.models.samplers``).

A schedule is the forward (noising) process a model trains on; a sampler walks it back:
``sampler.timesteps`` are what the model is fed, one per step, and ``sampler.step(output, i, x)``
turns the output at step ``i`` into the next ``x``. The denoiser never knows which sampler runs it::

    sampler = make_sampler("dpm++", schedule, 20, prediction="v")
    x = torch.randn(shape, generator=generator).to(device)
    for i, t in enumerate(sampler.timesteps):
        x = sampler.step(model(x, t.expand(len(x)).to(device)), i, x, generator=generator)

Images ``x`` are float32 ``[B, C, H, W]`` (any ``[B, ...]`` works); training timesteps are int64
``[B]`` (DDPM) or float ``s`` in [0, 1] ``[B]`` (flow). Each sampler reproduces a diffusers scheduler
step for step, configured as named on its class. Randomness comes only from ``generator`` (a CPU
``torch.Generator``): noise is drawn on the CPU and moved to ``x``'s device, so a seed reproduces a
sample on any device; ``step(..., noise=...)`` supplies that noise instead.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from torch import Tensor

from genforge.config import FieldError
from genforge.models import rng

PREDICTIONS = ("epsilon", "v")  # what a DDPM-objective model outputs: the noise, or v = sqrt(ab) eps - sqrt(1-ab) x0


def _check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise FieldError("prediction", f"must be one of {list(PREDICTIONS)}, got {prediction!r}")
    return prediction


def _per_example(values: Tensor, like: Tensor) -> Tensor:
    """Per-example coefficients ``[B]`` (or a scalar) → ``like``'s dtype and device, shaped ``[B, 1, ..., 1]``."""
    values = values.to(like.dtype).to(like.device)
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def _draw_noise(x: Tensor, generator: torch.Generator | None, noise: Tensor | None) -> Tensor:
    """Standard normal noise shaped like ``x``: ``noise`` when given, else drawn on the CPU from ``generator``."""
    if noise is None:
        noise = rng.randn(tuple(x.shape), generator)
    elif noise.shape != x.shape:
        raise FieldError("noise", f"must have the shape of x {list(x.shape)}, got {list(noise.shape)}")
    return noise.to(x.device, x.dtype)


def _x0_from(output: Tensor, x: Tensor, ab: float, prediction: str) -> Tensor:
    """x0 from the model output at one noise level ``ab`` (alphas_cumprod[t], a float)."""
    if prediction == "epsilon":  # x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab)
        return (x - math.sqrt(1.0 - ab) * output) / math.sqrt(ab)
    return math.sqrt(ab) * x - math.sqrt(1.0 - ab) * output  # x0 = sqrt(ab) x_t - sqrt(1 - ab) v


def _eps_from(output: Tensor, x: Tensor, ab: float, prediction: str) -> Tensor:
    """epsilon from the model output at one noise level ``ab``."""
    if prediction == "epsilon":
        return output
    return math.sqrt(ab) * output + math.sqrt(1.0 - ab) * x  # eps = sqrt(ab) v + sqrt(1 - ab) x_t


# ---------------------------------------------------------------- schedules
class NoiseSchedule:
    """Discrete DDPM schedule over T training timesteps (t = 0 .. T-1).

    Forward process: ``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps``, ``ab_t = prod_{s <= t} (1 - beta_s)``.

    Args:
        kind: ``linear`` — ``beta = linspace(beta_start, beta_end, T)`` (diffusers'
            ``"linear"``); ``cosine`` — Nichol & Dhariwal's
            ``ab(u) = cos((u + 0.008) / 1.008 * pi / 2)^2``, ``beta_t = min(1 - ab((t+1)/T) / ab(t/T), 0.999)``
            (diffusers' ``"squaredcos_cap_v2"``; ``beta_start``/``beta_end`` unused).
        timesteps: T.

    Attributes:
        timesteps: T (int).
        betas, alphas, alphas_cumprod: float64 CPU tensors ``[T]``; ``alphas_cumprod``
            is strictly decreasing in (0, 1).
        posterior_variance: ``beta_t (1 - ab_{t-1}) / (1 - ab_t)`` float64 ``[T]`` (0 at t = 0).
    """

    objective: ClassVar[str] = "ddpm"

    def __init__(self, kind: Literal["linear", "cosine"] = "linear", timesteps: int = 1000,
                 beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        if kind not in ("linear", "cosine"):
            raise ValueError(f"schedule kind must be 'linear' or 'cosine', got {kind!r}")
        if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 2:
            raise FieldError("timesteps", f"must be an int >= 2, got {timesteps!r}")
        self.kind = kind
        self.timesteps = timesteps
        if kind == "linear":
            if not 0.0 < beta_start <= beta_end < 1.0:
                raise ValueError(f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, "
                                 f"beta_end={beta_end}")
            self.betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        else:
            def ab(u: float) -> float:
                return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

            self.betas = torch.tensor([min(1.0 - ab((i + 1) / timesteps) / ab(i / timesteps), 0.999)
                                       for i in range(timesteps)], dtype=torch.float64)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        if not float(self.alphas_cumprod[-1]) > 0.0:
            raise ValueError(f"alphas_cumprod underflows to 0 over {timesteps} timesteps; use fewer or smaller betas")
        ab, ab_prev = self.alphas_cumprod, torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self._sqrt_ab, self._sqrt_1m_ab = ab.sqrt(), (1.0 - ab).sqrt()
        self.posterior_variance = self.betas * (1.0 - ab_prev) / (1.0 - ab)
        # log of the variance with t = 0 (variance 0) taking t = 1's value, as in Ho et al. / Nichol & Dhariwal
        self.posterior_log_variance = torch.log(torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]]))
        self._mean_x0 = self.betas * ab_prev.sqrt() / (1.0 - ab)
        self._mean_xt = (1.0 - ab_prev) * self.alphas.sqrt() / (1.0 - ab)

    def _coef(self, table: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """``table[t]`` shaped ``[B, 1, ..., 1]`` in ``like``'s dtype and device (t int64 ``[B]`` or a scalar)."""
        t = torch.as_tensor(t)
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"DDPM timesteps must be integers, got {t.dtype}")
        if t.device.type == "cpu" and t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.timesteps):
            raise FieldError("timesteps", f"must be in [0, {self.timesteps - 1}], got {t.tolist()[:8]}")
        values = table.to(like.dtype).to(like.device)[t.to(like.device, torch.long).reshape(-1)]
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def _ab(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(sqrt(ab_t), sqrt(1 - ab_t)), each ``[B, 1, ..., 1]``."""
        return self._coef(self._sqrt_ab, t, like), self._coef(self._sqrt_1m_ab, t, like)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise``; x0, noise ``[B, ...]``, t int64 ``[B]``."""
        a, s = self._ab(t, x0)
        return a * x0 + s * noise

    def velocity(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """The v-prediction target ``v = sqrt(ab_t) noise - sqrt(1 - ab_t) x0`` (Salimans & Ho), ``[B, ...]``."""
        a, s = self._ab(t, x0)
        return a * noise - s * x0

    def predict_x0(self, output: Tensor, x_t: Tensor, t: Tensor, prediction: str) -> Tensor:
        """x0 from the model output ``[B, ...]``.

        epsilon: ``(x_t - sqrt(1-ab) eps) / sqrt(ab)``; v: ``sqrt(ab) x_t - sqrt(1-ab) v``.
        """
        a, s = self._ab(t, x_t)
        if _check_prediction(prediction) == "epsilon":
            return (x_t - s * output) / a
        return a * x_t - s * output

    def predict_epsilon(self, output: Tensor, x_t: Tensor, t: Tensor, prediction: str) -> Tensor:
        """epsilon from the model output: epsilon → itself; v → ``sqrt(ab) v + sqrt(1-ab) x_t``."""
        if _check_prediction(prediction) == "epsilon":
            return output
        a, s = self._ab(t, x_t)
        return a * output + s * x_t

    def posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of ``q(x_{t-1} | x_t, x0)`` (for the variational bound).

        ``mean = beta_t sqrt(ab_{t-1}) / (1 - ab_t) x0 + (1 - ab_{t-1}) sqrt(alpha_t) / (1 - ab_t) x_t``,
        ``var = beta_t (1 - ab_{t-1}) / (1 - ab_t)`` with ``ab_{-1} = 1``; the log-variance at t = 0
        (where var = 0) is clipped to t = 1's value.

        Returns:
            mean ``[B, ...]`` like x_t, and log-variance ``[B, 1, ..., 1]`` (broadcasts over x_t).
        """
        mean = self._coef(self._mean_x0, t, x_t) * x0 + self._coef(self._mean_xt, t, x_t) * x_t
        return mean, self._coef(self.posterior_log_variance, t, x_t)


class FlowSchedule:
    """Rectified flow / flow matching: ``x_s = (1 - s) x0 + s noise``, s in [0, 1].

    The model predicts the velocity ``noise - x0`` (diffusers'
    ``FlowMatchEulerDiscreteScheduler`` convention, shift 1). Training draws
    ``s ~ U(0, 1)`` and feeds the model timestep ``s * timesteps`` (float,
    :meth:`model_timestep`), the scale the samplers feed too.
    """

    objective: ClassVar[str] = "flow"

    def __init__(self, timesteps: int = 1000) -> None:
        if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 1:
            raise FieldError("timesteps", f"must be an int >= 1, got {timesteps!r}")
        self.timesteps = timesteps

    def add_noise(self, x0: Tensor, noise: Tensor, s: Tensor) -> Tensor:
        """``x_s = (1 - s) x0 + s noise``; x0, noise ``[B, ...]``, s float ``[B]`` in [0, 1] (exact at s = 0 and 1)."""
        s = _per_example(torch.as_tensor(s), x0)
        return (1.0 - s) * x0 + s * noise

    def velocity(self, x0: Tensor, noise: Tensor) -> Tensor:
        """The training target ``d x_s / d s = noise - x0``."""
        return noise - x0

    def model_timestep(self, s: Tensor) -> Tensor:
        """What the model is fed for path position s: ``s * timesteps`` (float ``[B]``)."""
        return torch.as_tensor(s) * self.timesteps

    def predict_x0(self, output: Tensor, x_s: Tensor, s: Tensor) -> Tensor:
        """x0 from the predicted velocity: ``x0 = x_s - s v``."""
        return x_s - _per_example(torch.as_tensor(s), x_s) * output


# ---------------------------------------------------------------- samplers
