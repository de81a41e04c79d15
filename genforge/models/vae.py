"""Convolutional VAE (Kingma & Welling 2014), unconditional or class-conditional.

Encoder q(z | x, y): Conv(4, 2, 1) + GroupNorm + SiLU stages → Linear → (μ, log σ²).
Decoder p(x | z, y): Linear → base×base → ConvTranspose(4, 2, 1) + GroupNorm +
SiLU stages → ConvTranspose to C channels. GroupNorm (not BatchNorm) keeps every
example independent of the rest of its batch, so likelihoods are per-example
and identical in train and eval mode. Conditional models feed the one-hot label
to the encoder as extra constant input planes and concatenate it to z.

Likelihoods, with targets x = uint8 / 255 in [0, 1]:

- ``bernoulli``: the decoder gives logits; log p(x|z) = −BCE-with-logits(logits, x)
  summed over pixels. Grey levels are used as soft targets, without binarizing
  (the standard practice for MNIST-like data, and not the continuous Bernoulli).
  This is an exact log-probability for binary images and, for grey values, the
  usual unnormalized score; every value is ≤ 0 nats.
- ``gaussian``: the decoder gives the mean; a learned per-channel log σ (clamped
  to [ln(1/255), 1]) sets the variance. log p(x|z) is the Gaussian *density* of
  x on the [0, 1] scale in nats, so it can be positive. Subtracting D·ln 255
  (D = C·S·S) gives the density per grey level on the 0..255 scale; without
  dequantization it is not a bound on the discrete 8-bit likelihood.

Shape legend: B batch, C channels, S image side, L ``latent_dim``, K classes
or importance samples (said where used).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genforge.config import FieldError
from genforge.models import rng
from genforge.models.base import (
    Batch,
    OnnxGraphs,
    GenerativeModel,
    ImageModelConfig,
    Likelihood,
    SampleOptions,
    labels_for,
    unpack_image_batch,
)
from genforge.models.capabilities import ImageModel, Inpaints, Inverts, Reconstructs
from genforge.models.latent_fit import LatentFitOptions, candidate_labels, composite, fit_latents, random_starts
from genforge.models.layers import ConvDecoder, ConvEncoder, label_vectors, one_hot_maps, plan_resolution

LOG_SIGMA_MIN = math.log(1 / 255)  # one 8-bit grey level
LOG_SIGMA_MAX = 1.0
LOGVAR_LIMIT = 30.0  # encoder log σ² is clamped to ±this for numerical safety
_LOG_2PI = math.log(2 * math.pi)


@dataclass(kw_only=True)
class VAEConfig(ImageModelConfig):
    """VAE hyper-parameters; the shape fields come from :class:`ImageModelConfig`."""

    family: str = "vae"
    latent_dim: int = 16  # L
    width: int = 32  # encoder channels after its first conv (S/2), ×2 per stage down; decoder mirrors
    max_width: int = 256  # cap on channels at any stage
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    beta: float = 1.0  # weight of the KL term in the training loss (β-VAE); likelihoods ignore it
    iw_samples: int = 64  # importance samples K of log_likelihood (Burda et al. 2016)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family != "vae":
            raise FieldError("family", f"must be 'vae' for a VAEConfig, got {self.family!r}")
        for name in ("latent_dim", "width", "max_width"):
            value = getattr(self, name)
            if not 1 <= value <= 4096:
                raise ValueError(f"{name} must be in [1, 4096], got {value}")
        if not self.beta >= 0:
            raise FieldError("beta", f"must be >= 0, got {self.beta}")
        if not 1 <= self.iw_samples <= 100_000:
            raise FieldError("iw_samples", f"must be in [1, 100000], got {self.iw_samples}")


@dataclass(kw_only=True)
class VAESampleOptions(SampleOptions):
    """``noise``: False gives the decoder mean (Bernoulli probabilities or the clamped
    Gaussian mean); True draws pixels from p(x | z)."""

    noise: bool = False


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) in nats, summed over the last dim: [..., L] → [...]."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)


def _std_normal_logpdf(z: Tensor) -> Tensor:
    """log N(z; 0, I), [..., L] → [...]."""
    return -0.5 * (z.pow(2) + _LOG_2PI).sum(dim=-1)


@dataclass(kw_only=True)
class VAEInpaintOptions(LatentFitOptions):
    """Latent-fit options plus ``encode_iters`` (encode–decode passes that give the start) and ``jitter``
    (std of the noise added to that start, so restarts differ)."""

    encode_iters: int = 5
    jitter: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.encode_iters <= 1000:
            raise FieldError("encode_iters", f"must be in [0, 1000], got {self.encode_iters}")
        if not 0 <= self.jitter <= 10:
            raise FieldError("jitter", f"must be in [0, 10], got {self.jitter}")


class VAE(GenerativeModel, ImageModel, Reconstructs, Inverts, Inpaints):
    """Convolutional VAE with one parameter group ``loss`` (negative ELBO, β on the KL)."""

    config_class: ClassVar[type[VAEConfig]] = VAEConfig
    family: ClassVar[str] = "vae"
    sample_options: ClassVar[type[VAESampleOptions]] = VAESampleOptions
    inpaint_options: ClassVar[type[VAEInpaintOptions]] = VAEInpaintOptions
    inpaint_method: ClassVar[str] = ("iterative encode-decode start, then latent optimisation: MAP z (Adam) on "
                                     "the known pixels' likelihood + N(0, I) prior")

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        config.check_complete()
        self.config: VAEConfig = config
        self.plan = plan_resolution(config.image_size)
        k = self.num_classes
        c, latent = config.channels, config.latent_dim
        self.encoder = ConvEncoder(c + k, self.plan, config.width, config.max_width, norm="group", act=nn.SiLU)
        f, s = self.encoder.out_channels, self.encoder.out_size
        self.to_posterior = nn.Linear(f * s * s, 2 * latent)
        self.decoder = ConvDecoder(latent + k, c, self.plan, config.width, config.max_width,
                                   norm="group", act=nn.SiLU)
        if config.likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.full((c,), -2.0))  # per channel; σ ≈ 0.14 at init

    # ---- building blocks
    def _inputs(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """Batch → (targets [B, C, S, S] in [0, 1], labels [B] or None)."""
        return unpack_image_batch(batch, self.config, self.device, "VAE")

    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x [B, C, S, S] in [0, 1] (+ labels [B]) → (μ [B, L], log σ² [B, L])."""
        h = x * 2 - 1
        if self.num_classes:
            h = torch.cat([h, one_hot_maps(y, self.num_classes, h.shape[-1]).to(h.dtype)], dim=1)
        mu, logvar = self.to_posterior(self.encoder(h).flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-LOGVAR_LIMIT, LOGVAR_LIMIT)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """z [N, L] (+ labels [N]) → decoder output [N, C, S, S]: logits (Bernoulli) or mean (Gaussian)."""
        if self.num_classes:
            z = torch.cat([z, label_vectors(y, self.num_classes).to(z.dtype)], dim=1)
        return self.decoder(z)

    export_formats: ClassVar[tuple[str, ...]] = ("onnx", "hf")

    def onnx_graphs(self) -> OnnxGraphs:
        """``decoder``: z float32 [B, L] (+ y int64 [B] when conditional) → decoder output float32 [B, C, S, S]
        (logits for a Bernoulli decoder, the mean for a Gaussian one; :meth:`decode`)."""
        model = self

        class Decoder(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.vae = model

            def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
                return self.vae.decode(z, y)

        z = torch.randn(2, self.config.latent_dim, device=self.device)
        inputs = (z, torch.zeros(2, dtype=torch.long, device=self.device)) if self.num_classes else (z,)
        names = ["z", "y"][:len(inputs)]
        axes = {n: {0: "batch"} for n in [*names, "output"]}
        return {"decoder": (Decoder(), inputs, names, ["output"], axes)}

    def _log_sigma(self) -> Tensor:
        return self.log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)[:, None, None]  # [C, 1, 1]

    def log_px(self, out: Tensor, x: Tensor) -> Tensor:
        """log p(x | z) in nats summed over pixels: decoder output and targets [N, C, S, S] → [N]."""
        return -self._known_nll(out, x, torch.ones_like(x[:, :1]))

    def _mean(self, out: Tensor) -> Tensor:
        """Decoder output → mean image in [0, 1]."""
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out.clamp(0, 1)

    @staticmethod
    def _noise(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
        if generator is None:
            return torch.randn(shape, device=device)
        return torch.randn(shape, generator=generator).to(device)

    # ---- protocol
    def losses(self, batch: Batch, *, groups: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """Negative ELBO with one reparameterized sample (noise from the global RNG).

        Returns:
            ``loss``: mean over the batch of recon + β·kl (nats per example);
            ``recon``: mean −log p(x|z) and ``kl``: mean analytic KL(q(z|x) ‖ N(0, I)),
            both in nats per example and detached.
        """
        if groups is not None and set(groups) - {"loss"}:
            raise ValueError(f"unknown loss groups {sorted(set(groups) - {'loss'})}; the VAE has ['loss']")
        x, y = self._inputs(batch)
        mu, logvar = self.encode(x, y)  # [B, L] each
        z = mu + torch.exp(0.5 * logvar) * rng.train_randn(mu.shape, mu.device).to(mu.dtype)
        recon = -self.log_px(self.decode(z, y), x)  # [B]
        kl = gaussian_kl(mu.float(), logvar.float())  # [B]
        loss = (recon + self.config.beta * kl).mean()
        return {"loss": loss, "recon": recon.mean().detach(), "kl": kl.mean().detach()}

    def describe_likelihood(self, *, k: int | None = None) -> Likelihood:
        """The importance-weighted bound with ``k`` samples (default ``config.iw_samples``)."""
        k = self.config.iw_samples if k is None else int(k)
        kind = self.config.likelihood
        return Likelihood(
            kind="bound", importance_samples=k, stochastic=True,
            estimate=f"importance-weighted lower bound on log p with K={k} (an upper bound on the NLL)",
            params={"likelihood": kind, "scale": "pixels in [0, 1]; not a discrete 8-bit likelihood"},
            note=f"{kind} likelihood of pixels in [0, 1], so bits/dim is not comparable with published 8-bit "
                 f"(dequantised) figures")

    @torch.no_grad()
    def log_likelihood(self, batch: Batch, *, generator: torch.Generator | None = None,
                       k: int | None = None) -> Tensor:
        """Importance-weighted lower bound on log p(x | y) (Burda et al. 2016), nats [B].

        log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x), via logsumexp.
        K = 1 is a one-sample estimate of the ELBO (β = 1); the bound tightens
        as K grows. See the module docstring for the units of each likelihood.

        Args:
            k: number of importance samples (default ``config.iw_samples``).
            generator: CPU RNG for the samples (default: the global RNG).
        """
        k = self.config.iw_samples if k is None else int(k)
        if k < 1:
            raise FieldError("k", f"must be >= 1, got {k}")
        x, y = self._inputs(batch)
        b = x.shape[0]
        mu, logvar = self.encode(x, y)  # [B, L]
        std = torch.exp(0.5 * logvar)
        chunk = max(1, min(k, 4096 // b))  # samples decoded per pass: ≤ ~4096 images at a time
        log_w = []
        for start in range(0, k, chunk):
            m = min(chunk, k - start)
            eps = self._noise((m, b, self.config.latent_dim), generator, x.device)  # [m, B, L]
            z = mu + std * eps
            yy = None if y is None else y.repeat(m)
            out = self.decode(z.reshape(m * b, -1), yy)  # [m·B, C, S, S]
            lpx = self.log_px(out, x.repeat(m, 1, 1, 1)).view(m, b)
            lqz = (-0.5 * (eps.pow(2) + _LOG_2PI) - 0.5 * logvar).sum(dim=-1)  # log q(z|x), [m, B]
            log_w.append(lpx + _std_normal_logpdf(z) - lqz)
        return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)  # [B]

    @torch.no_grad()
    def sample(self, n: int, *, condition: Any = None, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """Decode ``n`` draws z ~ N(0, I): float32 [n, C, S, S] in [0, 1] (:meth:`render` of
        :meth:`draw_latents`, plus pixel noise with ``noise=True``).

        Args:
            condition: None (random labels when conditional), an int, or n labels.
            generator: CPU RNG for labels, z and pixel noise.
            options: :class:`VAESampleOptions` (``noise``).
        """
        noise = self.parse_sample_options(options).noise
        z, y = self.draw_latents(n, condition, generator)
        out = self.decode(z, y).float()
        if not noise:
            return self._mean(out)
        device = self.device
        if self.config.likelihood == "bernoulli":
            u = rng.rand(out.shape, generator).to(device)
            return (u < torch.sigmoid(out)).float()
        eps = rng.randn(out.shape, generator).to(device)
        return (out + torch.exp(self._log_sigma()) * eps).clamp_(0, 1)

    # ---- latent space
    def draw_latents(self, n: int, condition: Any = None,
                     generator: rng.Generator = None) -> tuple[Tensor, Tensor | None]:
        if n < 1:
            raise FieldError("n", f"must be >= 1, got {n}")
        y = labels_for(n, condition, self.num_classes, self.device, generator)
        return rng.randn((n, self.config.latent_dim), generator).to(self.device), y  # z [n, L]

    @torch.no_grad()
    def render(self, z: Tensor, y: Tensor | None = None, **options: Any) -> Tensor:
        """The decoder mean at z [n, L] (``noise=True`` is refused: rendering is deterministic)."""
        if self.parse_sample_options(options).noise:
            raise ValueError("render draws no pixel noise: noise=true does not apply")
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise FieldError("latents", f"must be [n, {self.config.latent_dim}], got {list(z.shape)}")
        return self._mean(self.decode(z.to(self.device), y).float())

    @torch.no_grad()
    def invert(self, x: Tensor, y: Tensor | None = None, *, refine: int = 0, **options: Any) -> Tensor:
        """The posterior mean μ(x, y): images float32 [B, C, S, S] in [0, 1] → [B, L] (exact: ``refine`` unused)."""
        self.parse_sample_options(options)
        return self.encode(x.to(self.device), None if y is None else y.to(self.device))[0]

    # ---- inpainting
    def inpaint(self, x: Tensor, fill: Tensor, *, condition: Any = None, generator: rng.Generator = None,
                **options: Any) -> Tensor:
        """Iterative encode–decode, then latent optimisation (:mod:`~genforge.models.latent_fit`) in the
        model's own likelihood: the masked pixels start at the decoder's guess, are re-encoded and
        re-decoded ``encode_iters`` times (one start per candidate), and z is then fitted to
        −log p(known pixels | z) + ½‖z‖²; every class is tried when a conditional model has no label."""
        opts = self.parse_inpaint_options(options)
        x, fill = x.to(self.device), fill.to(self.device)
        b = x.shape[0]
        y0 = None if condition is None else labels_for(b, condition, self.num_classes, self.device, None)
        y, m = candidate_labels(b, y0, self.num_classes, opts.restarts, self.device)
        cur = composite(x, torch.full_like(x, 0.5), fill).repeat_interleave(m, dim=0)  # [B·M, C, S, S]
        fills = fill.repeat_interleave(m, dim=0)
        with torch.no_grad():
            for _ in range(opts.encode_iters):  # iterative encode–decode
                cur = composite(cur, self._mean(self.decode(self.encode(cur, y)[0], y).float()), fills)
            z0 = self.encode(cur, y)[0]
        first = (torch.arange(b * m, device=self.device) % opts.restarts == 0)[:, None]  # the unjittered start
        z0 = z0 + opts.jitter * random_starts(b, m, self.config.latent_dim, generator, self.device) * ~first
        z, yb = fit_latents(self.decode, self._known_nll, x, (~fill).float(), z0, y, opts)
        with torch.no_grad():
            return composite(x, self._mean(self.decode(z, yb).float()), fill)

    def _known_nll(self, out: Tensor, target: Tensor, known: Tensor) -> Tensor:
        """−log p(known pixels | z) in nats [N] under the model's likelihood (decoder output [N, C, S, S])."""
        if self.config.likelihood == "bernoulli":
            lp = -F.binary_cross_entropy_with_logits(out.float(), target, reduction="none")
        else:
            log_sigma = self._log_sigma()
            lp = -0.5 * ((target - out.float()) * torch.exp(-log_sigma)).pow(2) - log_sigma - 0.5 * _LOG_2PI
        return -(lp * known).flatten(1).sum(dim=1)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Decoder mean at the posterior mean: uint8 [B, C, S, S] (+ labels) → float32 [B, C, S, S] in [0, 1]."""
        x, y = unpack_image_batch({"x": x, "y": y}, self.config, self.device, "VAE")
        mu, _ = self.encode(x, y)
        return self._mean(self.decode(mu, y).float())
