"""Samplers for diffusion and flow models, as small objects over a schedule (``genforge.models.schedules``).

``sampler.timesteps`` are what the model is fed, one per step, and ``sampler.step(output, i, x)`` turns
the output at step ``i`` into the next ``x``; each reproduces a diffusers scheduler step for step,
configured as named on its class. Randomness comes only from ``generator`` (noise drawn on the CPU),
or ``step(..., noise=...)``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from genforge.config import FieldError
from genforge.models.schedules import (FlowSchedule, NoiseSchedule, _check_prediction, _draw_noise, _eps_from,
                                       _x0_from)


class Sampler:
    """One sampling method over a schedule: ``timesteps`` to visit (descending), ``step`` to go from x_t to the
    next x. Stateful samplers (multistep) are built fresh per sampling call.

    Attributes:
        name: the key in :data:`SAMPLERS`.
        objective: ``ddpm`` or ``flow``: the schedule kind it runs on.
        timesteps: what the model is fed at each step, ``[steps]`` (int64 for DDPM; float32 for flow).
        steps: the number of model evaluations.
    """

    name: ClassVar[str]
    objective: ClassVar[str]
    timesteps: Tensor

    def __init__(self, schedule: NoiseSchedule | FlowSchedule, steps: int) -> None:
        check_sampler_schedule(type(self), schedule)
        bound = self.max_steps(schedule)
        if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= bound:
            raise FieldError("steps", f"must be an int in [1, {bound}] for the {self.name!r} sampler on a "
                                      f"{schedule.timesteps}-timestep schedule, got {steps!r}")
        self.schedule = schedule
        self.steps = steps

    @classmethod
    def max_steps(cls, schedule: NoiseSchedule | FlowSchedule) -> int:
        """The most steps this sampler can take on ``schedule`` (its training timesteps T by default)."""
        return schedule.timesteps

    def __len__(self) -> int:
        return self.steps

    def start_at(self, i: int) -> None:
        """Begin at step ``i`` instead of 0 (img2img); a multistep sampler's first step there is first order."""

    def step(self, output: Tensor, i: int, x: Tensor, generator: torch.Generator | None = None,
             noise: Tensor | None = None) -> Tensor:
        """The next x from the model's ``output`` at ``x`` fed ``timesteps[i]``; ``[B, ...]`` like x.

        ``noise`` (like x) replaces the noise a stochastic sampler would draw from ``generator``.
        """
        raise NotImplementedError


def _leading_timesteps(train_steps: int, steps: int) -> list[int]:
    """diffusers' ``timestep_spacing="leading"``: ``[(steps-1) r, ..., r, 0]`` with ``r = T // steps``."""
    ratio = train_steps // steps
    return [i * ratio for i in reversed(range(steps))]


class DDPMSampler(Sampler):
    """Ancestral DDPM sampling (Ho et al.) = diffusers' ``DDPMScheduler(variance_type="fixed_small",
    clip_sample=False, timestep_spacing="leading")``.

    With ``t`` the current and ``p`` the next visited timestep (``ab_{-1} = 1``) and
    ``beta = 1 - ab_t / ab_p``: ``x_p = sqrt(ab_p) beta / (1 - ab_t) x0 + sqrt(1 - beta) (1 - ab_p) / (1 - ab_t) x_t
    + sigma z`` with ``sigma^2 = (1 - ab_p) / (1 - ab_t) beta`` and z ~ N(0, I), added only while t > 0.
    """

    name: ClassVar[str] = "ddpm"
    objective: ClassVar[str] = "ddpm"

    def __init__(self, schedule: NoiseSchedule, steps: int, *, prediction: str = "epsilon") -> None:
        super().__init__(schedule, steps)
        self.prediction = _check_prediction(prediction)
        self._t = _leading_timesteps(schedule.timesteps, steps)
        self._prev = self._t[1:] + [-1]
        self.timesteps = torch.tensor(self._t, dtype=torch.long)

    def step(self, output: Tensor, i: int, x: Tensor, generator: torch.Generator | None = None,
             noise: Tensor | None = None) -> Tensor:
        t, p = self._t[i], self._prev[i]
        ab_t = float(self.schedule.alphas_cumprod[t])
        ab_p = float(self.schedule.alphas_cumprod[p]) if p >= 0 else 1.0
        beta = 1.0 - ab_t / ab_p
        x0 = _x0_from(output, x, ab_t, self.prediction)
        mean = (math.sqrt(ab_p) * beta / (1.0 - ab_t)) * x0 + (math.sqrt(1.0 - beta) * (1.0 - ab_p) / (1.0 - ab_t)) * x
        if t == 0:
            return mean
        variance = max((1.0 - ab_p) / (1.0 - ab_t) * beta, 1e-20)
        return mean + math.sqrt(variance) * _draw_noise(x, generator, noise)


class DDIMSampler(Sampler):
    """DDIM (Song et al.) = diffusers' ``DDIMScheduler(clip_sample=False, set_alpha_to_one=False,
    timestep_spacing="leading", steps_offset=0)``.

    ``x_p = sqrt(ab_p) x0 + sqrt(1 - ab_p - sigma^2) eps + sigma z`` with
    ``sigma = eta sqrt((1 - ab_p) / (1 - ab_t) (1 - ab_t / ab_p))``; ``p = t - T // steps``, and past
    the last step ``ab_p = ab_0`` (``set_alpha_to_one=False``) or 1 (``True``, diffusers' own default).
    ``eta = 0`` is deterministic; ``eta = 1`` has DDPM's variance.
    """

    name: ClassVar[str] = "ddim"
    objective: ClassVar[str] = "ddpm"

    def __init__(self, schedule: NoiseSchedule, steps: int, *, prediction: str = "epsilon", eta: float = 0.0,
                 set_alpha_to_one: bool = False) -> None:
        super().__init__(schedule, steps)
        self.prediction = _check_prediction(prediction)
        self.eta = _check_eta(eta)
        self._t = _leading_timesteps(schedule.timesteps, steps)
        self._ratio = schedule.timesteps // steps
        self._final_ab = 1.0 if set_alpha_to_one else float(schedule.alphas_cumprod[0])
        self.timesteps = torch.tensor(self._t, dtype=torch.long)

    def step(self, output: Tensor, i: int, x: Tensor, generator: torch.Generator | None = None,
             noise: Tensor | None = None) -> Tensor:
        t = self._t[i]
        p = t - self._ratio
        ab_t = float(self.schedule.alphas_cumprod[t])
        ab_p = float(self.schedule.alphas_cumprod[p]) if p >= 0 else self._final_ab
        x0 = _x0_from(output, x, ab_t, self.prediction)
        eps = _eps_from(output, x, ab_t, self.prediction)
        std = self.eta * math.sqrt((1.0 - ab_p) / (1.0 - ab_t) * (1.0 - ab_t / ab_p))
        out = math.sqrt(ab_p) * x0 + math.sqrt(max(1.0 - ab_p - std ** 2, 0.0)) * eps
        if self.eta > 0:
            out = out + std * _draw_noise(x, generator, noise)
        return out


class DPMSolverPP2M(Sampler):
    """DPM-Solver++ 2M (Lu et al.) = diffusers' ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++",
    solver_order=2, solver_type="midpoint", lower_order_final=True, final_sigmas_type="zero",
    timestep_spacing="linspace")``.

    Timesteps ``round(linspace(0, T-1, steps+1))`` descending without the final 0. With
    ``alpha_i = sqrt(ab)``, ``sigma_i = sqrt(1 - ab)``, ``lambda_i = log(alpha_i / sigma_i)`` at step i and
    ``h = lambda_{i+1} - lambda_i``: ``x_{i+1} = sigma_{i+1} / sigma_i x_i - alpha_{i+1} (e^{-h} - 1) D`` with
    ``D = x0_i`` (first order: the first step) or ``D = x0_i + (x0_i - x0_{i-1}) h / (2 h_{i-1})`` (second
    order). The last step lands on sigma = 0 and returns ``x0`` of the last output. Stateful: steps must
    run in order 0, 1, ..., steps-1 on one instance.
    """

    name: ClassVar[str] = "dpm++"
    objective: ClassVar[str] = "ddpm"

    def __init__(self, schedule: NoiseSchedule, steps: int, *, prediction: str = "epsilon") -> None:
        super().__init__(schedule, steps)
        self.prediction = _check_prediction(prediction)
        T = schedule.timesteps
        self._t = [int(v) for v in np.linspace(0, T - 1, steps + 1).round()[::-1][:-1]]
        ab = [float(schedule.alphas_cumprod[t]) for t in self._t]
        self._alpha = [math.sqrt(a) for a in ab] + [1.0]
        self._sigma = [math.sqrt(1.0 - a) for a in ab] + [0.0]
        self._lambda = [math.log(a) - math.log(s) for a, s in zip(self._alpha[:-1], self._sigma[:-1])] + [math.inf]
        self._ab = ab
        self._prev_x0: Tensor | None = None
        self._next_i = 0
        self.timesteps = torch.tensor(self._t, dtype=torch.long)

    @classmethod
    def max_steps(cls, schedule: NoiseSchedule | FlowSchedule) -> int:
        """T - 1: more steps would round two timesteps onto the same one."""
        return schedule.timesteps - 1

    def start_at(self, i: int) -> None:
        self._next_i, self._prev_x0 = i, None

    def step(self, output: Tensor, i: int, x: Tensor, generator: torch.Generator | None = None,
             noise: Tensor | None = None) -> Tensor:
        if i != self._next_i:
            raise ValueError(f"{type(self).__name__} is multistep: steps run in order on a fresh sampler "
                             f"(expected i={self._next_i}, got {i})")
        x0 = _x0_from(output, x, self._ab[i], self.prediction)
        prev_x0, self._prev_x0, self._next_i = self._prev_x0, x0, i + 1
        if self._sigma[i + 1] == 0.0:  # final step onto sigma = 0: e^{-h} = 0, the update is x0 itself
            return x0
        h = self._lambda[i + 1] - self._lambda[i]
        a = self._alpha[i + 1] * math.expm1(-h)  # alpha_{i+1} (e^{-h} - 1)
        out = (self._sigma[i + 1] / self._sigma[i]) * x - a * x0
        if prev_x0 is not None:  # second order, midpoint: - a D1 / 2 with D1 = (x0 - x0_prev) / r0, r0 = h_prev / h
            r0 = (self._lambda[i] - self._lambda[i - 1]) / h
            out = out - (0.5 * a) * ((1.0 / r0) * (x0 - prev_x0))
        return out


class FlowEuler(Sampler):
    """Euler on the flow ODE = diffusers' ``FlowMatchEulerDiscreteScheduler(shift=1.0)``.

    ``sigma = linspace(1, 1/T, steps)`` (then a final 0), fed as ``timesteps = sigma * T`` (float32);
    ``x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v`` with v the predicted velocity ``noise - x0``.
    Deterministic: ``generator`` and ``noise`` are unused.
    """

    name: ClassVar[str] = "euler"
    objective: ClassVar[str] = "flow"

    def __init__(self, schedule: FlowSchedule, steps: int) -> None:
        super().__init__(schedule, steps)
        T = schedule.timesteps
        sigma_min = float(torch.ones(1, dtype=torch.float32)[0] / T)  # the smallest float32 training sigma
        ts = np.linspace(1.0 * T, sigma_min * T, steps)
        sigmas = torch.from_numpy(ts / T).to(torch.float32)
        self.timesteps = sigmas * T
        self.sigmas = torch.cat([sigmas, torch.zeros(1)])  # float32 [steps + 1]

    def step(self, output: Tensor, i: int, x: Tensor, generator: torch.Generator | None = None,
             noise: Tensor | None = None) -> Tensor:
        dt = float(self.sigmas[i + 1] - self.sigmas[i])  # float32 arithmetic, as diffusers
        return x + dt * output


SAMPLERS: dict[str, type[Sampler]] = {"ddpm": DDPMSampler, "ddim": DDIMSampler, "dpm++": DPMSolverPP2M,
                                       "euler": FlowEuler}


def _check_eta(eta: float) -> float:
    if not 0.0 <= eta <= 1.0:
        raise FieldError("eta", f"must be in [0, 1], got {eta}")
    return float(eta)


_SCHEDULE_FOR = {"ddpm": "NoiseSchedule", "flow": "FlowSchedule"}


def check_sampler_schedule(cls: type[Sampler], schedule: object) -> None:
    """Raise a ``ValueError`` when sampler class ``cls`` cannot run on ``schedule``, saying what each needs."""
    have = getattr(schedule, "objective", None)
    if have != cls.objective:
        each = "; ".join(f"{o!r}: {[k for k, c in SAMPLERS.items() if c.objective == o]}" for o in _SCHEDULE_FOR)
        raise FieldError("sampler", f"{cls.name!r} needs the {cls.objective!r} objective (a "
                                    f"{_SCHEDULE_FOR[cls.objective]}); got a {type(schedule).__name__} (objective "
                                    f"{have!r}). Samplers per objective: {each}")


def make_sampler(name: str, schedule: NoiseSchedule | FlowSchedule, steps: int, *, prediction: str = "epsilon",
                 eta: float = 0.0) -> Sampler:
    """Build sampler ``name`` (a key of :data:`SAMPLERS`) over ``schedule`` for ``steps`` model evaluations.

    ``prediction`` (``epsilon`` or ``v``) is what a DDPM-objective model outputs; flow samplers always
    take the velocity and ignore it. ``eta`` in [0, 1] is DDIM's noise scale (only ``ddim`` takes a non-zero one).

    Raises:
        ValueError: an unknown name (listing :data:`SAMPLERS`); a sampler on the wrong schedule kind;
            ``steps`` outside [1, the sampler's bound]; ``eta`` outside [0, 1]; an unknown prediction.
    """
    if name not in SAMPLERS:
        raise FieldError("sampler", f"must be one of {list(SAMPLERS)}, got {name!r}")
    cls = SAMPLERS[name]
    check_sampler_schedule(cls, schedule)
    _check_eta(eta)
    if cls is DDIMSampler:
        return DDIMSampler(schedule, steps, prediction=prediction, eta=eta)
    if eta != 0.0:
        raise FieldError("eta", f"applies only to the 'ddim' sampler, not {name!r} (got eta={eta})")
    if cls.objective == "flow":
        return cls(schedule, steps)
    return cls(schedule, steps, prediction=prediction)
