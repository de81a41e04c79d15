"""Diffusion models (Ho et al. 2020) and flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023),
unconditional or class-conditional with classifier-free guidance (Ho & Salimans 2022).

The family is a U-Net denoiser (``genforge.models.unet``) plus a schedule object; samplers
(``genforge.models.schedules``: DDPM ancestral, DDIM, DPM-Solver++ 2M, Euler for flow) are chosen at
sampling time, so one trained model samples with any of them. Objectives (``model.objective``):

- ``ddpm``: x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε, t uniform in 0..T-1; the U-Net predicts ε
  (``prediction: epsilon``) or v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x0 (``prediction: v``), MSE loss.
  ``log_likelihood`` is the variational bound with a discretised Gaussian decoder over 8-bit pixels
  (nats per image; an upper bound on the NLL), estimated on ``k`` stratified timesteps (all T when k ≥ T).
- ``flow``: x_s = (1 - s) x0 + s ε, s ~ U(0, 1); the U-Net predicts the velocity ε - x0. No likelihood.

Conditional models drop the label with probability ``label_dropout`` in training (the "no label" class),
so one network gives conditional and unconditional predictions; ``guidance`` w combines them as
uncond + w · (cond - uncond): w = 0 is unconditional, 1 conditional, > 1 guided.
Pixels are mapped from uint8 to [-1, 1]. Shape legend: B batch, C channels, S side, T timesteps, K classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from genforge.models import rng
from genforge.models.base import (Batch, GenerativeModel, ImageModelConfig, Likelihood, SampleOptions, eval_mode,
                                  labels_for, unpack_image_batch)
from genforge.models.capabilities import ImageModel
from genforge.models.samplers import SAMPLERS, make_sampler
from genforge.models.schedules import FlowSchedule, NoiseSchedule
from genforge.models.unet import UNet



@dataclass(kw_only=True)
class DiffusionConfig(ImageModelConfig):
    """Diffusion hyper-parameters; the shape fields come from :class:`ImageModelConfig`."""

    family: str = "diffusion"
    objective: Literal["ddpm", "flow"] = "ddpm"
    prediction: Literal["epsilon", "v"] = "epsilon"  # ddpm only (flow predicts the velocity)
    schedule: Literal["linear", "cosine"] = "linear"  # ddpm only
    timesteps: int = 1000  # T
    width: int = 32  # U-Net channels at full resolution, ×2 per level down (up to ×max_mult)
    max_mult: int = 4
    blocks: int = 1  # residual blocks per level
    attention: bool = True  # self-attention at the lowest resolution
    dropout: float = 0.0
    label_dropout: float = 0.1  # conditional: probability of training on the "no label" class
    vlb_timesteps: int = 50  # k of log_likelihood: stratified timesteps per image (T = exact sum)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family != "diffusion":
            raise ValueError(f"family must be 'diffusion' for a DiffusionConfig, got {self.family!r}")
        if not 2 <= self.timesteps <= 100_000:
            raise ValueError(f"timesteps must be in [2, 100000], got {self.timesteps}")
        for name in ("width", "max_mult", "blocks"):
            if not 1 <= getattr(self, name) <= 4096:
                raise ValueError(f"{name} must be in [1, 4096], got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")
        if not 1 <= self.vlb_timesteps <= self.timesteps:
            raise ValueError(f"vlb_timesteps must be in [1, timesteps={self.timesteps}], got {self.vlb_timesteps}")


@dataclass(kw_only=True)
class DiffusionSampleOptions(SampleOptions):
    """``sampler``: ddpm, ddim, dpm++ (ddpm objective) or euler (flow); None = dpm++ / euler.
    ``steps``: model evaluations per sample (≤ T). ``eta``: DDIM noise (0 = deterministic).
    ``guidance``: classifier-free guidance w (0 unconditional, 1 conditional, > 1 guided); None = 1 for a
    conditional model; an unconditional model takes none."""

    sampler: str | None = None
    steps: int = 20
    eta: float = 0.0
    guidance: float | None = None

    def __post_init__(self) -> None:
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if self.guidance is not None and not 0.0 <= self.guidance <= 100.0:
            raise ValueError(f"guidance must be in [0, 100], got {self.guidance}")


def _normal_kl(m1: Tensor, lv1: Tensor, m2: Tensor, lv2: Tensor) -> Tensor:
    """KL(N(m1, e^lv1) ‖ N(m2, e^lv2)) elementwise, nats."""
    return 0.5 * (-1.0 + lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2))


def _discretized_gaussian_nll(x: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """-log P(x) of 8-bit pixels x in [-1, 1] (bins 2/255 wide, edges open) under N(mean, e^log_var), nats."""
    inv_std = torch.exp(-0.5 * log_var)
    cdf_plus = torch.special.ndtr((x - mean + 1 / 255) * inv_std)
    cdf_min = torch.special.ndtr((x - mean - 1 / 255) * inv_std)
    log_p = torch.where(x < -0.999, torch.log(cdf_plus.clamp(min=1e-12)),
                        torch.where(x > 0.999, torch.log((1 - cdf_min).clamp(min=1e-12)),
                                    torch.log((cdf_plus - cdf_min).clamp(min=1e-12))))
    return -log_p


class Diffusion(GenerativeModel, ImageModel):
    """U-Net denoiser + schedule; one parameter group ``loss``."""

    config_class: ClassVar[type[DiffusionConfig]] = DiffusionConfig
    family: ClassVar[str] = "diffusion"
    sample_options: ClassVar[type[DiffusionSampleOptions]] = DiffusionSampleOptions

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__(config)
        config.check_complete()
        self.config: DiffusionConfig = config
        self.unet = UNet(config.channels, config.image_size, width=config.width, blocks=config.blocks,
                         max_mult=config.max_mult, attention=config.attention, dropout=config.dropout,
                         num_classes=self.num_classes)
        if config.objective == "ddpm":
            self.schedule: NoiseSchedule | FlowSchedule = NoiseSchedule(config.schedule, config.timesteps)
        else:
            self.schedule = FlowSchedule(config.timesteps)

    # ---- training
    def losses(self, batch: Batch, *, groups: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """MSE of the prediction (ε, v or velocity) at a random time per image; noise from the global RNG."""
        if groups is not None and set(groups) - {"loss"}:
            raise ValueError(f"unknown loss groups {sorted(set(groups) - {'loss'})}; the diffusion family has "
                             f"['loss']")
        x, y = unpack_image_batch(batch, self.config, self.device, "diffusion model")
        x0 = x * 2 - 1  # [B, C, S, S] in [-1, 1]
        noise = torch.randn_like(x0)
        b = x0.shape[0]
        if y is not None and self.config.label_dropout > 0:  # classifier-free guidance: sometimes no label
            drop = torch.rand(b, device=x0.device) < self.config.label_dropout
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        if self.config.objective == "ddpm":
            t = torch.randint(0, self.config.timesteps, (b,), device=x0.device)
            x_t = self.schedule.add_noise(x0, noise, t)
            target = noise if self.config.prediction == "epsilon" else self.schedule.velocity(x0, noise, t)
            fed = t.float()
        else:
            s = torch.rand(b, device=x0.device)
            x_t = self.schedule.add_noise(x0, noise, s)
            target = self.schedule.velocity(x0, noise)
            fed = s * self.config.timesteps
        out = self.unet(x_t, fed, y)
        return {"loss": F.mse_loss(out.float(), target.float())}

    # ---- sampling
    def _guided(self, x: Tensor, t: Tensor, y: Tensor | None, guidance: float) -> Tensor:
        """The U-Net's prediction with classifier-free guidance w: uncond + w · (cond - uncond)."""
        if y is None or guidance == 1.0:
            return self.unet(x, t, y)
        if guidance == 0.0:
            return self.unet(x, t, None)
        both = self.unet(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, self.num_classes)]))
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)

    def parse_sample_options(self, options: Any = None) -> DiffusionSampleOptions:
        opts = super().parse_sample_options(options)
        objective = self.config.objective
        if opts.sampler is not None and SAMPLERS[opts.sampler].objective != objective:
            usable = [n for n, s in SAMPLERS.items() if s.objective == objective]
            raise ValueError(f"sampler {opts.sampler!r} does not run a {objective} model; use one of "
                             f"{', '.join(usable)}")
        if opts.steps > self.config.timesteps:
            raise ValueError(f"steps must be <= the {self.config.timesteps} training timesteps, got {opts.steps}")
        if opts.guidance is not None and not self.num_classes:
            raise ValueError("guidance needs a class-conditional model; this one is unconditional")
        return opts

    @torch.no_grad()
    def sample(self, n: int, *, condition: Any = None, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """Draw ``n`` images float32 [n, C, S, S] in [0, 1] with the chosen sampler (eval mode, restored after).

        Args:
            condition: None (random labels when conditional), an int, or n labels.
            generator: CPU RNG for labels, the initial noise and any sampler noise.
            options: :class:`DiffusionSampleOptions`.
        """
        opts = self.parse_sample_options(options)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        device = self.device
        y = labels_for(n, condition, self.num_classes, device, generator)
        guidance = 1.0 if opts.guidance is None else opts.guidance
        name = opts.sampler or ("dpm++" if self.config.objective == "ddpm" else "euler")
        sampler = make_sampler(name, self.schedule, opts.steps, prediction=self.config.prediction, eta=opts.eta)
        c, s = self.config.channels, self.config.image_size
        x = rng.randn((n, c, s, s), generator).to(device)  # [n, C, S, S]
        with eval_mode(self.unet):
            for i, t in enumerate(sampler.timesteps):
                fed = torch.full((n,), float(t), device=device)
                x = sampler.step(self._guided(x, fed, y, guidance), i, x, generator)
        return ((x.float() + 1) / 2).clamp_(0, 1)

    # ---- likelihood
    def describe_likelihood(self, *, k: int | None = None) -> Likelihood | None:
        if self.config.objective != "ddpm":
            return None
        k = min(self.config.vlb_timesteps if k is None else int(k), self.config.timesteps)
        exact = k >= self.config.timesteps
        how = "all T timesteps" if exact else f"{k} stratified timesteps of T={self.config.timesteps} per image"
        return Likelihood(kind="bound", importance_samples=k, stochastic=True,
                          estimate=f"DDPM variational bound with a discretised Gaussian decoder, {how} "
                                   f"(an upper bound on the NLL)",
                          params={"likelihood": "discretised gaussian, 8-bit", "schedule": self.config.schedule,
                                  "prediction": self.config.prediction})

    def _vlb_terms(self, x0: Tensor, t: Tensor, y: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """Per-image VLB term at timestep t (nats): the decoder NLL at t = 0, else KL(q(x_{t-1}|x_t,x0) ‖ p).

        x0 [B, C, S, S] in [-1, 1], t int64 [B]; computed in float64 from the schedule's posterior."""
        sch = self.schedule
        x0 = x0.double()
        noise = torch.randn(x0.shape, generator=generator).to(x0.device, torch.float64)
        x_t = sch.add_noise(x0, noise, t)
        out = self.unet(x_t.float(), t.float(), y).double()
        true_mean, log_var = sch.posterior(x0, x_t, t)
        model_mean, _ = sch.posterior(sch.predict_x0(out, x_t, t, self.config.prediction), x_t, t)
        lv = log_var.expand_as(x_t)
        kl = _normal_kl(true_mean, lv, model_mean, lv).flatten(1).sum(1)
        decoder = _discretized_gaussian_nll(x0, model_mean, lv).flatten(1).sum(1)
        return torch.where(t == 0, decoder, kl)

    @torch.no_grad()
    def log_likelihood(self, batch: Batch, *, generator: torch.Generator | None = None,
                       k: int | None = None) -> Tensor:
        """Lower bound on log p(x | y) in nats per image [B] (see the module docstring); the prior term
        KL(q(x_{T-1}|x0) ‖ N(0, I)) is exact, the sum over timesteps is estimated on ``k`` strata."""
        info = self.describe_likelihood(k=k)
        if info is None:
            raise NotImplementedError("a flow-matching diffusion model has no likelihood bound here; "
                                      "train with model.objective=ddpm for one")
        x, y = unpack_image_batch(batch, self.config, self.device, "diffusion model")
        x0 = (x * 2 - 1).double()
        b, T, k = x0.shape[0], self.config.timesteps, info.importance_samples
        ab_last = self.schedule.alphas_cumprod[-1].item()
        prior = _normal_kl(math.sqrt(ab_last) * x0, torch.full_like(x0, math.log(1 - ab_last)),
                           torch.zeros_like(x0), torch.zeros_like(x0)).flatten(1).sum(1)
        bounds = torch.linspace(0, T, k + 1)
        total = prior.clone()
        for j in range(k):
            lo, hi = int(bounds[j]), max(int(bounds[j]) + 1, int(bounds[j + 1]))
            if k >= T:
                t = torch.full((b,), j, dtype=torch.long)
            else:
                t = torch.randint(lo, hi, (b,), generator=generator)
            total += (hi - lo) * self._vlb_terms(x0, t.to(x0.device), y, generator)
        return -total.float()
