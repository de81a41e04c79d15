"""Noise schedules and samplers for diffusion and flow models, as small objects.

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

import numpy as np
import torch
from torch import Tensor

PREDICTIONS = ("epsilon", "v")  # what a DDPM-objective model outputs: the noise, or v = sqrt(ab) eps - sqrt(1-ab) x0


def _check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {list(PREDICTIONS)}, got {prediction!r}")
    return prediction


def _per_example(values: Tensor, like: Tensor) -> Tensor:
    """Per-example coefficients ``[B]`` (or a scalar) → ``like``'s dtype and device, shaped ``[B, 1, ..., 1]``."""
    values = values.to(like.dtype).to(like.device)
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def _draw_noise(x: Tensor, generator: torch.Generator | None, noise: Tensor | None) -> Tensor:
    """Standard normal noise shaped like ``x``: ``noise`` when given, else drawn on the CPU from ``generator``."""
    if noise is None:
        noise = torch.randn(tuple(x.shape), generator=generator)
    elif noise.shape != x.shape:
        raise ValueError(f"noise must have the shape of x {list(x.shape)}, got {list(noise.shape)}")
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
            raise ValueError(f"timesteps must be an int >= 2, got {timesteps!r}")
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
            raise ValueError(f"timesteps must be in [0, {self.timesteps - 1}], got {t.tolist()[:8]}")
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
            raise ValueError(f"timesteps must be an int >= 1, got {timesteps!r}")
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
            raise ValueError(f"steps must be an int in [1, {bound}] for the {self.name!r} sampler on a "
                             f"{schedule.timesteps}-timestep schedule, got {steps!r}")
        self.schedule = schedule
        self.steps = steps

    @classmethod
    def max_steps(cls, schedule: NoiseSchedule | FlowSchedule) -> int:
        """The most steps this sampler can take on ``schedule`` (its training timesteps T by default)."""
        return schedule.timesteps

    def __len__(self) -> int:
        return self.steps

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
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    return float(eta)


_SCHEDULE_FOR = {"ddpm": "NoiseSchedule", "flow": "FlowSchedule"}


def check_sampler_schedule(cls: type[Sampler], schedule: object) -> None:
    """Raise a ``ValueError`` when sampler class ``cls`` cannot run on ``schedule``, saying what each needs."""
    have = getattr(schedule, "objective", None)
    if have != cls.objective:
        each = "; ".join(f"{o!r}: {[k for k, c in SAMPLERS.items() if c.objective == o]}" for o in _SCHEDULE_FOR)
        raise ValueError(f"the {cls.name!r} sampler needs the {cls.objective!r} objective (a "
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
        raise ValueError(f"unknown sampler {name!r}; choose one of {list(SAMPLERS)}")
    cls = SAMPLERS[name]
    check_sampler_schedule(cls, schedule)
    _check_eta(eta)
    if cls is DDIMSampler:
        return DDIMSampler(schedule, steps, prediction=prediction, eta=eta)
    if eta != 0.0:
        raise ValueError(f"eta applies only to the 'ddim' sampler, not {name!r} (got eta={eta})")
    if cls.objective == "flow":
        return cls(schedule, steps)
    return cls(schedule, steps, prediction=prediction)
