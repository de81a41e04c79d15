"""A KL-regularised convolutional autoencoder for latent diffusion (Rombach et al. 2022, without the perceptual
and adversarial terms: no pretrained perceptual network is available offline).

Encoder: conv stem → per level a residual block and a stride-2 conv (``factor`` = 2^levels) → residual block
→ GroupNorm, SiLU, conv to the mean and log-variance of ``latent_channels`` planes at side S / factor. Decoder:
the mirror, with nearest ×2 upsampling. Loss: the reconstruction of a latent drawn from q(z | x) (L1 or MSE
on pixels in [-1, 1], mean per element) plus ``kl_weight`` × KL(q(z | x) ‖ N(0, I)) (mean per latent
element). The run keeps ``latent_std``, a running standard deviation of the latent means seen in training,
so a latent diffusion run scales the latents to unit variance without looking at data.

An autoencoder generates from a source image: ``sample(n, condition=Condition(image=x))`` decodes a latent
drawn from q(z | x) with the generator (close to the mean: the KL weight is small); ``reconstruct`` decodes
the mean. The preview grid shows real images, the baseline of the
same compression (area-downsampled by ``factor``, then bicubic up) and the reconstructions.

Shape legend: B batch, C image channels, S image side, Z latent channels, s = S / factor.
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
from genforge.models.base import (Batch, GenerativeModel, ImageModelConfig, eval_mode, images_to_unit,
                                  unpack_image_batch)
from genforge.models.capabilities import ImageConditioned, ImageModel, Reconstructs
from genforge.models.layers import group_norm

LOGVAR_LIMIT = 30.0
STD_MOMENTUM = 0.99  # running latent standard deviation: new = m · old + (1 - m) · batch


@dataclass(kw_only=True)
class AutoencoderConfig(ImageModelConfig):
    """Autoencoder hyper-parameters; the shape fields come from :class:`ImageModelConfig`."""

    family: str = "autoencoder"
    factor: int = 4  # downsampling: latents are S / factor on a side (2, 4 or 8)
    latent_channels: int = 4  # Z
    width: int = 64  # channels at full resolution, ×2 per level down (up to ×max_mult)
    max_mult: int = 2
    kl_weight: float = 1e-5  # × the mean KL per latent element
    recon: Literal["l1", "mse"] = "l1"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family != "autoencoder":
            raise FieldError("family", f"must be 'autoencoder' for an AutoencoderConfig, got {self.family!r}")
        if self.factor not in (2, 4, 8):
            raise FieldError("factor", f"must be 2, 4 or 8, got {self.factor}")
        if not 1 <= self.latent_channels <= 64:
            raise FieldError("latent_channels", f"must be in [1, 64], got {self.latent_channels}")
        for name in ("width", "max_mult"):
            if not 1 <= getattr(self, name) <= 4096:
                raise FieldError(name, f"must be in [1, 4096], got {getattr(self, name)}")
        if not 0.0 <= self.kl_weight <= 1.0:
            raise FieldError("kl_weight", f"must be in [0, 1], got {self.kl_weight}")
        if self.conditional or self.prompted:
            raise FieldError("conditional", "an autoencoder reconstructs images; it takes no labels or captions")
        if self.image_size and self.image_size % self.factor:
            raise FieldError("factor", f"{self.factor} does not divide the image side {self.image_size}")


class Block(nn.Module):
    """GroupNorm → SiLU → conv → GroupNorm → SiLU → conv, residual (1×1 conv skip when the width changes)."""

    def __init__(self, w_in: int, w_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(group_norm(w_in), nn.SiLU(), nn.Conv2d(w_in, w_out, 3, padding=1),
                                  group_norm(w_out), nn.SiLU(), nn.Conv2d(w_out, w_out, 3, padding=1))
        self.skip = nn.Conv2d(w_in, w_out, 1) if w_in != w_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


def _widths(width: int, levels: int, max_mult: int) -> list[int]:
    return [width * min(2 ** i, max_mult) for i in range(levels + 1)]


class Encoder(nn.Module):
    """Images [B, C, S, S] in [-1, 1] → (mean, log-variance) [B, Z, s, s] each."""

    def __init__(self, channels: int, latent: int, width: int, levels: int, max_mult: int) -> None:
        super().__init__()
        ws = _widths(width, levels, max_mult)
        layers: list[nn.Module] = [nn.Conv2d(channels, ws[0], 3, padding=1)]
        for i in range(levels):
            layers += [Block(ws[i], ws[i]), nn.Conv2d(ws[i], ws[i + 1], 3, stride=2, padding=1)]
        layers += [Block(ws[-1], ws[-1]), group_norm(ws[-1]), nn.SiLU(),
                   nn.Conv2d(ws[-1], 2 * latent, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, logvar = self.net(x).chunk(2, dim=1)
        return mean, logvar.clamp(-LOGVAR_LIMIT, LOGVAR_LIMIT)


class Decoder(nn.Module):
    """Latents [B, Z, s, s] → images [B, C, S, S] (unbounded; [-1, 1] is the target range)."""

    def __init__(self, channels: int, latent: int, width: int, levels: int, max_mult: int) -> None:
        super().__init__()
        ws = _widths(width, levels, max_mult)[::-1]
        layers: list[nn.Module] = [nn.Conv2d(latent, ws[0], 3, padding=1), Block(ws[0], ws[0])]
        for i in range(levels):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ws[i], ws[i + 1], 3, padding=1),
                       Block(ws[i + 1], ws[i + 1])]
        layers += [group_norm(ws[-1]), nn.SiLU(), nn.Conv2d(ws[-1], channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class Autoencoder(GenerativeModel, ImageModel, ImageConditioned, Reconstructs):
    """KL autoencoder; one parameter group ``loss``."""

    config_class: ClassVar[type[AutoencoderConfig]] = AutoencoderConfig
    family: ClassVar[str] = "autoencoder"

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__(config)
        config.check_complete()
        self.config: AutoencoderConfig = config
        levels = int(math.log2(config.factor))
        args = (config.channels, config.latent_channels, config.width, levels, config.max_mult)
        self.encoder, self.decoder = Encoder(*args), Decoder(*args)
        self.register_buffer("latent_std", torch.ones(()))  # running std of the latent means (saved with the run)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(Z, s, s) of the latents."""
        s = self.config.image_size // self.config.factor
        return (self.config.latent_channels, s, s)

    # ---- the two halves, for a latent diffusion run standing on this one
    def encode(self, x: Tensor) -> Tensor:
        """Images float [B, C, S, S] in [0, 1] → latent means [B, Z, s, s] (not scaled)."""
        return self.encoder(x * 2 - 1)[0]

    def decode(self, z: Tensor) -> Tensor:
        """Latents [B, Z, s, s] → images float32 [B, C, S, S] in [0, 1]."""
        return ((self.decoder(z).float() + 1) / 2).clamp(0, 1)

    # ---- training
    def losses(self, batch: Batch, *, groups: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """Reconstruction of z ~ q(z | x) plus ``kl_weight`` × KL; noise from the global RNG. In training mode
        the running ``latent_std`` takes this batch's (under torchrun, rank 0's: buffers follow rank 0)."""
        if groups is not None and set(groups) - {"loss"}:
            raise ValueError(f"unknown loss groups {sorted(set(groups) - {'loss'})}; the autoencoder family has "
                             f"['loss']")
        x, _ = unpack_image_batch(batch, self.config, self.device, "autoencoder")
        target = x * 2 - 1  # [B, C, S, S] in [-1, 1]
        mean, logvar = self.encoder(target)
        z = mean + torch.exp(0.5 * logvar) * rng.train_randn(mean.shape, mean.device).to(mean.dtype)
        out = self.decoder(z).float()
        recon = F.l1_loss(out, target) if self.config.recon == "l1" else F.mse_loss(out, target)
        kl = 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1 - logvar.float()).mean()
        if self.training:
            with torch.no_grad():
                std = mean.detach().float().std()
                self.latent_std.mul_(STD_MOMENTUM).add_((1 - STD_MOMENTUM) * std)
        return {"loss": recon + self.config.kl_weight * kl}

    # ---- reconstruction and "sampling"
    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """uint8 images [B, C, S, S] → reconstructions float32 [B, C, S, S] in [0, 1] (the latent mean)."""
        return self.decode(self.encode(images_to_unit(x.to(self.device))))

    def accepted_conditions(self) -> tuple[str, ...]:
        return ("image",)

    def required_conditions(self) -> tuple[str, ...]:
        return ("image",)

    def source_variants(self) -> tuple[str, ...]:
        return ("recon",)

    def make_source(self, x: Tensor, variant: str) -> Tensor:
        return x

    def check_source(self, image: Tensor, what: str = "the image") -> None:
        s = self.config.image_size
        if tuple(image.shape[-2:]) != (s, s):
            raise ValueError(f"{what} is {image.shape[-1]}x{image.shape[-2]}; this autoencoder takes {s}x{s} images")

    def baseline(self, source: Tensor) -> tuple[str, Tensor]:
        """The same compression without learning: area-downsampled by ``factor``, then bicubic back up."""
        s, f = self.config.image_size, self.config.factor
        small = F.interpolate(source.float(), size=(s // f, s // f), mode="area")
        up = F.interpolate(small, size=(s, s), mode="bicubic", align_corners=False)
        return f"area /{f} then bicubic x{f}", up.round().clamp(0, 255).to(torch.uint8)

    @torch.no_grad()
    def sample(self, n: int, *, condition: Any = None, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """Decodings of latents drawn from q(z | x) for the ``n`` source images x of ``condition`` (a
        :class:`Condition` whose ``image`` is uint8 or float in [0, 1], [n, C, S, S]) → float32 [n, C, S, S]
        in [0, 1]."""
        self.parse_sample_options(options)
        image = self.source_images(condition, n, does="reconstructs", hint="`genforge sample RUN --image IMG`")
        self.check_source(image[0])
        x = image.float() / 255 if image.dtype == torch.uint8 else image.float()
        with eval_mode(self):
            mean, logvar = self.encoder(x.to(self.device) * 2 - 1)
            z = mean + torch.exp(0.5 * logvar) * rng.randn(tuple(mean.shape), generator).to(mean.device)
            return self.decode(z)
