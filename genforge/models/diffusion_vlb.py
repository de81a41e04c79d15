"""The diffusion family's likelihood: the DDPM variational bound (Ho et al. 2020, with the discretised Gaussian
decoder of Nichol & Dhariwal 2021) in nats per image, as a mixin of :class:`~genforge.models.diffusion.Diffusion`.

The prior term KL(q(x_T | x0) ‖ N(0, I)) is exact; the sum over timesteps is estimated on ``k`` stratified
timesteps per image (all T when k ≥ T). Shape legend: B batch, C channels, S side, T timesteps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genforge.models.base import Batch, Likelihood, unpack_image_batch


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


class VLBLikelihood:
    """``describe_likelihood`` / ``log_likelihood`` of a DDPM diffusion model (flow models have none)."""

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
        out = self._predict(x_t.float(), t.float(), y).double()
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
        if self.prompted:
            y = self._batch_text(batch, x.shape[0])
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
