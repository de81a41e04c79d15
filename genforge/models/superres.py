"""Super-resolution by conditional flow matching, SR3-style (Saharia et al. 2021): a U-Net sees the noisy
sample concatenated with the bicubic-upsampled low-resolution image and learns to generate the detail.

Training makes its own low-resolution inputs from the high-resolution batch: for a factor f drawn per image
from ``factors``, ``low = area-downsample(x, S / f)`` quantised to 8 bits (what a user's low-resolution PNG
holds), ``up = bicubic(low, S)`` (torch ``interpolate``, ``align_corners=False``, clamped to [0, 1]; the
baseline every super-resolution number is compared with). The model diffuses the residual
``r = 2 (x - up)`` on the flow-matching path ``r_s = (1 - s) r + s ε`` (velocity target ``ε - r``), fed
``[r_s, 2 up - 1]`` and the factor as a class embedding; sampling integrates the flow ODE with Euler steps
and returns ``clamp(up + r / 2, 0, 1)``. Predicting the residual rather than the whole image (SR3 predicts
the image) lets the network spend its capacity on what bicubic misses.

Shape legend: B batch, C channels, S high-resolution side, s low-resolution side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from genforge.config import FieldError
from genforge.models import rng
from genforge.models.base import Batch, GenerativeModel, ImageModelConfig, SampleOptions, eval_mode, unpack_image_batch
from genforge.models.capabilities import ImageModel, Upscales
from genforge.models.samplers import FlowEuler
from genforge.models.schedules import FlowSchedule
from genforge.models.unet import UNet


@dataclass(kw_only=True)
class SuperResConfig(ImageModelConfig):
    """Super-resolution hyper-parameters; ``image_size`` is the output (high-resolution) side."""

    family: str = "superres"
    factors: list[int] = field(default_factory=lambda: [4, 2])  # upscaling factors f trained (S % f == 0)
    timesteps: int = 1000  # scale of the time fed to the U-Net (s · timesteps)
    width: int = 32
    max_mult: int = 2
    blocks: int = 1
    attention: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family != "superres":
            raise FieldError("family", f"must be 'superres' for a SuperResConfig, got {self.family!r}")
        if self.conditional:
            raise ValueError("a superres model is conditioned on the low-resolution image, not on class labels: "
                             "set model.conditional=false")
        if not self.factors or any(not isinstance(f, int) or f < 2 for f in self.factors):
            raise FieldError("factors", f"must be a non-empty list of integers >= 2, got {self.factors}")
        if len(set(self.factors)) != len(self.factors):
            raise FieldError("factors", f"must be distinct, got {self.factors}")
        if self.image_size:
            bad = [f for f in self.factors if self.image_size % f or self.image_size // f < 2]
            if bad:
                raise ValueError(f"image_size {self.image_size} is not divisible into a low-resolution side >= 2 "
                                 f"by factors {bad}")
        for name in ("width", "max_mult", "blocks"):
            if not 1 <= getattr(self, name) <= 4096:
                raise ValueError(f"{name} must be in [1, 4096], got {getattr(self, name)}")
        if not 2 <= self.timesteps <= 100_000:
            raise FieldError("timesteps", f"must be in [2, 100000], got {self.timesteps}")


@dataclass(kw_only=True)
class SuperResSampleOptions(SampleOptions):
    """``steps``: Euler steps of the flow ODE (model evaluations per image)."""

    steps: int = 20

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 1000:
            raise FieldError("steps", f"must be in [1, 1000], got {self.steps}")

    def model_evaluations(self) -> int:
        return self.steps


def downsample(x: Tensor, factor: int) -> Tensor:
    """The low-resolution image of x [B, C, S, S] in [0, 1]: area average to S / factor, 8-bit quantised."""
    s = x.shape[-1] // factor
    return F.interpolate(x, size=(s, s), mode="area").mul(255).round().div(255)


def bicubic(low: Tensor, size: int) -> Tensor:
    """Bicubic upsampling of low [B, C, s, s] in [0, 1] to [B, C, size, size], clamped to [0, 1] (the baseline)."""
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


class SuperRes(GenerativeModel, ImageModel, Upscales):
    """U-Net on [residual_s, bicubic image] with the factor as its label; one parameter group ``loss``."""

    config_class: ClassVar[type[SuperResConfig]] = SuperResConfig
    family: ClassVar[str] = "superres"
    sample_options: ClassVar[type[SuperResSampleOptions]] = SuperResSampleOptions

    def __init__(self, config: SuperResConfig) -> None:
        super().__init__(config)
        config.check_complete()
        self.config: SuperResConfig = config
        c = config.channels
        self.unet = UNet(c, config.image_size, width=config.width, blocks=config.blocks, max_mult=config.max_mult,
                         attention=config.attention, dropout=config.dropout, num_classes=len(config.factors),
                         cond_channels=c)
        self.schedule = FlowSchedule(config.timesteps)

    @property
    def upscale_factors(self) -> tuple[int, ...]:
        return tuple(self.config.factors)

    def factor_index(self, low_side: int) -> int:
        """Which trained factor a low-resolution side belongs to; a ``ValueError`` listing the sides accepted."""
        s = self.config.image_size
        for i, f in enumerate(self.config.factors):
            if s // f == low_side:
                return i
        raise ValueError(f"{self._sides()}; got a {low_side}x{low_side} image")

    def _sides(self) -> str:
        s = self.config.image_size
        return f"this model upscales to {s}x{s} from " + ", ".join(f"{s // f}x{s // f} (x{f})" for f in self.config.factors)

    def losses(self, batch: Batch, *, groups: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """MSE of the predicted velocity at a random path position and a random factor per image."""
        if groups is not None and set(groups) - {"loss"}:
            raise ValueError(f"unknown loss groups {sorted(set(groups) - {'loss'})}; the superres family has "
                             f"['loss']")
        x, _ = unpack_image_batch(batch, self.config, self.device, "superres model")  # [B, C, S, S] in [0, 1]
        b, s = x.shape[0], self.config.image_size
        k = torch.randint(0, len(self.config.factors), (b,), device=x.device)  # factor index per image
        up = torch.zeros_like(x)
        for i, f in enumerate(self.config.factors):
            up = torch.where((k == i)[:, None, None, None], bicubic(downsample(x, f), s), up)
        r0 = 2 * (x - up)  # [B, C, S, S] residual in [-2, 2]
        noise = torch.randn_like(r0)
        t = torch.rand(b, device=x.device)
        r_t = self.schedule.add_noise(r0, noise, t)
        out = self.unet(torch.cat([r_t, 2 * up - 1], dim=1), t * self.config.timesteps, k)
        return {"loss": F.mse_loss(out.float(), self.schedule.velocity(r0, noise).float())}

    @torch.no_grad()
    def upscale(self, low: Tensor, *, generator: rng.Generator = None, **options: Any) -> Tensor:
        opts = self.parse_sample_options(options)
        if low.ndim != 4 or low.shape[1] != self.config.channels or low.shape[2] != low.shape[3]:
            raise ValueError(f"expected low-resolution images [B, {self.config.channels}, s, s], got {list(low.shape)}")
        if low.dtype == torch.uint8:
            low = low.float() / 255
        k = self.factor_index(low.shape[-1])
        device, b, s = self.device, low.shape[0], self.config.image_size
        up = bicubic(low.float().to(device), s)  # [B, C, S, S]
        cond = 2 * up - 1
        labels = torch.full((b,), k, dtype=torch.long, device=device)
        sampler = FlowEuler(self.schedule, opts.steps)
        r = rng.randn(tuple(up.shape), generator).to(device)
        with eval_mode(self.unet):
            for i, t in enumerate(sampler.timesteps):
                fed = torch.full((b,), float(t), device=device)
                r = sampler.step(self.unet(torch.cat([r, cond], dim=1), fed, labels), i, r)
        return (up + r.float() / 2).clamp_(0, 1)

    def accepted_conditions(self) -> tuple[str, ...]:
        return ("image",)

    def required_conditions(self) -> tuple[str, ...]:
        return ("image",)

    def source_variants(self) -> tuple[str, ...]:
        return tuple(f"x{f}" for f in self.config.factors)

    def make_source(self, x: Tensor, variant: str) -> Tensor:
        """Area average of uint8 [B, C, S, S] to S / f, rounded to uint8 (what a user's small PNG holds)."""
        f = int(variant.lstrip("x"))
        s = x.shape[-1] // f
        return F.interpolate(x.float(), size=(s, s), mode="area").round().clamp(0, 255).to(torch.uint8)

    def check_source(self, image: Tensor, what: str = "the image") -> None:
        h, w = image.shape[-2:]
        if h != w:
            raise ValueError(f"{what} is {w}x{h}; super-resolution takes square images")
        if all(self.config.image_size // f != w for f in self.config.factors):
            raise ValueError(f"{what} is {w}x{h}; {self._sides()}")

    def baseline(self, source: Tensor) -> tuple[str, Tensor]:
        up = bicubic(source.float() / 255, self.config.image_size)
        return "bicubic (torch, align_corners=False)", up.mul(255).round().to(torch.uint8)

    @torch.no_grad()
    def sample(self, n: int, *, condition: Any = None, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """Upscale the ``n`` low-resolution images of ``condition`` (a :class:`Condition` whose ``image`` is
        uint8 or float in [0, 1], [n, C, s, s]) → float32 [n, C, S, S] in [0, 1]."""
        image = self.source_images(condition, n, does="upscales", hint="`genforge upscale RUN --image IMG`")
        return self.upscale(image, generator=generator, **options)
