"""DCGAN (Radford et al. 2016), unconditional or class-conditional.

Generator: z (+ one-hot label) → Linear → base×base → ConvTranspose(4, 2, 1)
+ BatchNorm + ReLU stages → ConvTranspose to C channels → tanh. Conditional
generators also use class-conditional BatchNorm in every stage.

Discriminator: Conv(4, 2, 1) + LeakyReLU(0.2) stages (BatchNorm, spectral
normalization or no normalization after the first) → Linear → one logit.
Conditional discriminators see the label twice: as one-hot input planes
concatenated to the image (Mirza & Osindero 2014) and through the projection
term of Miyato & Koyama (2018): logit += <embed(y), sum-pooled features>.

Pixels are mapped from uint8 to [-1, 1] (the tanh range). Shape legend:
B batch, C channels, S image side, Z ``z_dim``, K classes.
"""

from __future__ import annotations

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
    eval_mode,
    labels_for,
    unpack_image_batch,
)
from genforge.models.capabilities import ImageModel, Inpaints, LatentSpace
from genforge.models.gan_parts import MinibatchStd, diff_augment, parse_augment
from genforge.models.layers import (
    ConvDecoder,
    Upsample,
    ConvEncoder,
    ResolutionPlan,
    dcgan_init_,
    label_vectors,
    one_hot_maps,
    plan_resolution,
    spectral_norm_,
)

from genforge.models.latent_fit import (LatentFitOptions, candidate_labels, composite, fit_latents,
                                        gaussian_pixel_nll, random_starts)

GROUPS = ("discriminator", "generator")  # update order


@dataclass(kw_only=True)
class GANConfig(ImageModelConfig):
    """DCGAN hyper-parameters; the shape fields come from :class:`ImageModelConfig`."""

    family: str = "gan"
    z_dim: int = 100  # latent size
    g_width: int = 32  # generator channels at its highest hidden resolution (S/2), ×2 per stage down
    d_width: int = 32  # discriminator channels after its first conv (S/2), ×2 per stage down
    max_width: int = 512  # cap on channels at any stage
    loss: Literal["nonsaturating", "hinge"] = "nonsaturating"
    d_norm: Literal["batch", "spectral", "none"] = "batch"  # discriminator normalization
    r1_gamma: float = 0.0  # weight of the R1 penalty γ/2·E‖∇D(x_real)‖² (Mescheder et al. 2018); 0 = off
    g_upsample: Upsample = "deconv"  # generator upsampling: ConvTranspose (DCGAN) or resize-conv (no checkerboard)
    augment: str = ""  # DiffAugment policy for every discriminator input, e.g. "translation,cutout"; "" = none
    mbstd_group: int = 0  # minibatch standard deviation over groups of this size before D's head; 0 = off

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family != "gan":
            raise FieldError("family", f"must be 'gan' for a GANConfig, got {self.family!r}")
        for name in ("z_dim", "g_width", "d_width", "max_width"):
            value = getattr(self, name)
            if not 1 <= value <= 4096:
                raise ValueError(f"{name} must be in [1, 4096], got {value}")
        if not self.r1_gamma >= 0:  # also rejects NaN
            raise ValueError(f"r1_gamma must be >= 0, got {self.r1_gamma}")
        if self.g_upsample not in ("deconv", "resize"):
            raise FieldError("g_upsample", f"must be deconv or resize, got {self.g_upsample!r}")
        parse_augment(self.augment)
        if not 0 <= self.mbstd_group <= 64:
            raise FieldError("mbstd_group", f"must be in [0, 64] (0 = off), got {self.mbstd_group}")


class Generator(nn.Module):
    """z [B, Z] (+ labels [B]) → images [B, C, S, S] in [-1, 1]."""

    def __init__(self, cfg: GANConfig, plan: ResolutionPlan) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes if cfg.conditional else 0
        self.net = ConvDecoder(cfg.z_dim + self.num_classes, cfg.channels, plan, cfg.g_width, cfg.max_width,
                               norm="batch", act=nn.ReLU, num_classes=self.num_classes,
                               upsample=cfg.g_upsample)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.num_classes:
            z = torch.cat([z, label_vectors(y, self.num_classes).to(z.dtype)], dim=1)  # [B, Z + K]
        return torch.tanh(self.net(z, y))


class Discriminator(nn.Module):
    """images [B, C, S, S] in [-1, 1] (+ labels [B]) → logits [B]."""

    def __init__(self, cfg: GANConfig, plan: ResolutionPlan) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes if cfg.conditional else 0
        # conditional: one-hot label planes join the image at the input (cGAN, Mirza & Osindero 2014)
        # besides the projection term; the input path learns label-following in a few hundred steps
        self.features = ConvEncoder(cfg.channels + self.num_classes, plan, cfg.d_width, cfg.max_width,
                                    norm=cfg.d_norm, act=lambda: nn.LeakyReLU(0.2))
        f, s = self.features.out_channels, self.features.out_size
        self.mbstd = MinibatchStd(cfg.mbstd_group) if cfg.mbstd_group else None
        self.head = nn.Linear((f + (self.mbstd is not None)) * s * s, 1)
        self.embed = nn.Embedding(cfg.num_classes, f) if cfg.conditional else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if self.num_classes:
            x = torch.cat([x, one_hot_maps(y, self.num_classes, x.shape[-1]).to(x.dtype)], dim=1)  # [B, C+K, S, S]
        h = self.features(x)  # [B, F, s, s]
        logit = self.head((h if self.mbstd is None else self.mbstd(h)).flatten(1)).squeeze(1)  # [B]
        if self.embed is not None:  # projection discriminator
            logit = logit + (self.embed(y) * h.sum(dim=(2, 3))).sum(dim=1)
        return logit


class GAN(GenerativeModel, ImageModel, LatentSpace, Inpaints):
    """DCGAN with two parameter groups, ``discriminator`` then ``generator``.

    Losses (``loss="nonsaturating"``, Goodfellow et al. 2014):
    D: softplus(-D(x)) + softplus(D(G(z))); G: softplus(-D(G(z))).
    (``loss="hinge"``): D: relu(1 - D(x)) + relu(1 + D(G(z))); G: -D(G(z)).
    Conditional models draw fakes with the batch's own labels.
    """

    config_class: ClassVar[type[GANConfig]] = GANConfig
    family: ClassVar[str] = "gan"
    inpaint_options: ClassVar[type[LatentFitOptions]] = LatentFitOptions
    inpaint_method: ClassVar[str] = "latent optimisation: MAP z (Adam) on the known pixels' MSE + N(0, I) prior"

    def __init__(self, config: GANConfig) -> None:
        super().__init__(config)
        config.check_complete()
        self.config: GANConfig = config
        self.plan = plan_resolution(config.image_size)
        self.generator = Generator(config, self.plan)
        self.discriminator = Discriminator(config, self.plan)
        self._augment = parse_augment(config.augment)
        dcgan_init_(self)
        if config.d_norm == "spectral":
            spectral_norm_(self.discriminator)

    # ---- helpers
    def _real(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """Batch → (images [B, C, S, S] in [-1, 1], labels [B] or None)."""
        x, y = unpack_image_batch(batch, self.config, self.device, "GAN")
        return x * 2 - 1, y

    def _judge(self, x: Tensor, y: Tensor | None) -> Tensor:
        """Discriminator logits [B] of images x [B, C, S, S] in [-1, 1], through the DiffAugment policy if any."""
        if self._augment:
            x = diff_augment(x, self._augment)
        return self.discriminator(x, y)

    def _d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        real, fake = real.float(), fake.float()  # losses are reduced in fp32 under autocast
        if self.config.loss == "hinge":
            return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def _g_loss(self, fake: Tensor) -> Tensor:
        fake = fake.float()
        if self.config.loss == "hinge":
            return -fake.mean()
        return F.softplus(-fake).mean()

    # ---- protocol
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "discriminator": [p for p in self.discriminator.parameters() if p.requires_grad],
            "generator": [p for p in self.generator.parameters() if p.requires_grad],
        }

    def losses(self, batch: Batch, *, groups: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """Scalar losses ``discriminator`` and/or ``generator``, plus detached logs.

        The discriminator loss sees ``fake.detach()`` (with ``groups=("discriminator",)``
        the fakes are drawn under ``no_grad``); z comes from the global RNG.
        The generator runs in its current mode, so in training its BatchNorm
        running statistics move during a discriminator step; its parameters do not.

        Returns:
            ``{"discriminator", "generator"}`` (those asked for), ``d_real`` and
            ``d_fake`` (mean logits on real and fake images; detached), and
            ``r1`` (the unweighted penalty) when ``r1_gamma`` > 0.
        """
        groups = GROUPS if groups is None else tuple(groups)
        unknown = set(groups) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown loss groups {sorted(unknown)}; the GAN has {list(GROUPS)}")
        x, y = self._real(batch)
        z = rng.train_randn((x.shape[0], self.config.z_dim), x.device)  # [B, Z]
        want_g = "generator" in groups
        with torch.set_grad_enabled(want_g and torch.is_grad_enabled()):
            fake = self.generator(z, y)  # [B, C, S, S]
        out: dict[str, Tensor] = {}
        if "discriminator" in groups:
            r1 = self.config.r1_gamma > 0 and torch.is_grad_enabled()
            if r1:
                x = x.detach().requires_grad_(True)
            d_real = self._judge(x, y)
            d_fake = self._judge(fake.detach(), y)
            loss = self._d_loss(d_real, d_fake)
            penalty = None
            if r1:
                (grad,) = torch.autograd.grad(d_real.sum(), x, create_graph=True)  # [B, C, S, S]
                penalty = grad.float().pow(2).sum(dim=(1, 2, 3)).mean()
                loss = loss + 0.5 * self.config.r1_gamma * penalty
            out["discriminator"] = loss
            out["d_real"] = d_real.float().mean().detach()
            out["d_fake"] = d_fake.float().mean().detach()
            if penalty is not None:
                out["r1"] = penalty.detach()
        if want_g:
            g_fake = self._judge(fake, y)
            out["generator"] = self._g_loss(g_fake)
            out.setdefault("d_fake", g_fake.float().mean().detach())
        return out

    @torch.no_grad()
    def sample(self, n: int, *, condition: Any = None, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """Draw ``n`` images, float32 [n, C, S, S] in [0, 1]: :meth:`render` of :meth:`draw_latents`.

        The generator runs in eval mode (BatchNorm running statistics), so a
        sample depends only on its own z and label, and sampling never changes
        the model's buffers; the previous mode is restored afterwards.

        Args:
            condition: None (random labels when conditional), an int, or n labels.
            generator: CPU RNG for labels and z; the same seed gives the same images.
            options: none (the GAN has no sample options; any name is a ``ConfigError``).
        """
        self.parse_sample_options(options)
        z, y = self.draw_latents(n, condition, generator)
        return self.render(z, y)

    # ---- latent space
    def draw_latents(self, n: int, condition: Any = None,
                     generator: rng.Generator = None) -> tuple[Tensor, Tensor | None]:
        if n < 1:
            raise FieldError("n", f"must be >= 1, got {n}")
        y = labels_for(n, condition, self.num_classes, self.device, generator)
        return rng.randn((n, self.config.z_dim), generator).to(self.device), y  # z [n, Z]

    def _generate(self, z: Tensor, y: Tensor | None) -> Tensor:
        """z [n, Z] (+ labels or class weights) → images [n, C, S, S] in [0, 1], with gradients (eval mode)."""
        with eval_mode(self.generator):
            return ((self.generator(z, y).float() + 1) / 2).clamp(0, 1)

    export_formats: ClassVar[tuple[str, ...]] = ("onnx", "hf")

    def onnx_graphs(self) -> OnnxGraphs:
        """``generator``: z float32 [B, Z] (+ y int64 [B] when conditional) → image float32 [B, C, S, S]
        in [-1, 1]."""
        z = torch.randn(2, self.config.z_dim, device=self.device)
        inputs = (z, torch.zeros(2, dtype=torch.long, device=self.device)) if self.num_classes else (z,)
        names = ["z", "y"][:len(inputs)]
        axes = {n: {0: "batch"} for n in [*names, "image"]}
        return {"generator": (self.generator, inputs, names, ["image"], axes)}

    @torch.no_grad()
    def render(self, z: Tensor, y: Tensor | None = None, **options: Any) -> Tensor:
        self.parse_sample_options(options)
        if z.ndim != 2 or z.shape[1] != self.config.z_dim:
            raise FieldError("latents", f"must be [n, {self.config.z_dim}], got {list(z.shape)}")
        return self._generate(z.to(self.device), y)

    # ---- inpainting
    def inpaint(self, x: Tensor, fill: Tensor, *, condition: Any = None, generator: rng.Generator = None,
                **options: Any) -> Tensor:
        """Latent optimisation (:mod:`~genforge.models.latent_fit`): z fitted to the known pixels by MSE
        (a Gaussian of σ = 0.1 on [0, 1], in nats) plus the N(0, I) prior; every class is tried when a
        conditional model is given no label."""
        opts = self.parse_inpaint_options(options)
        x, fill = x.to(self.device), fill.to(self.device)
        b = x.shape[0]
        y0 = None if condition is None else labels_for(b, condition, self.num_classes, self.device, None)
        y, m = candidate_labels(b, y0, self.num_classes, opts.restarts, self.device)
        z0 = random_starts(b, m, self.config.z_dim, generator, self.device)
        z, yb = fit_latents(self._generate, gaussian_pixel_nll, x, (~fill).float(), z0, y, opts)
        with torch.no_grad():
            return composite(x, self._generate(z, yb), fill)
