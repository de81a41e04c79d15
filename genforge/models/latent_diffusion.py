"""Latent diffusion (Rombach et al. 2022): the diffusion family on the latents of an autoencoder run.

A ``latent-diffusion`` run stands on an ``autoencoder`` run (``parents.autoencoder``): training images are
encoded by it (the latent mean, divided by the autoencoder's running ``latent_std`` so the latents have
about unit variance), the U-Net denoises latents of shape (Z, S/f, S/f), and samples are decoded by it.
Everything else is the diffusion family's: objectives, samplers, guidance, text conditioning with
cross-attention (``prompted``), inversion; inpainting runs RePaint on the latents with the mask
max-pooled to the latent side, then puts the known pixels back. There is no likelihood bound.

Shape legend: B batch, C channels, S image side, Z latent channels, f the autoencoder's factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genforge.config import ConfigError
from genforge.models.base import GenerativeModel, Likelihood, OnnxGraphs
from genforge.models.diffusion import Diffusion, DiffusionConfig


@dataclass(kw_only=True)
class LatentDiffusionConfig(DiffusionConfig):
    """Diffusion on an autoencoder's latents; ``latent_channels`` and ``latent_factor`` must be the
    autoencoder run's (checked when the run is attached)."""

    FAMILY: ClassVar[str] = "latent-diffusion"
    family: str = "latent-diffusion"
    latent_channels: int = 4  # Z
    latent_factor: int = 4  # f: latents are S / f on a side

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.latent_factor not in (2, 4, 8):
            raise ValueError(f"latent_factor must be 2, 4 or 8, got {self.latent_factor}")
        if self.image_size and self.image_size % self.latent_factor:
            raise ValueError(f"latent_factor {self.latent_factor} does not divide the image side {self.image_size}")


class _Decoder(nn.Module):
    """Scaled latents → images in [0, 1] (:meth:`LatentDiffusion.from_space` as a module)."""

    def __init__(self, model: LatentDiffusion) -> None:
        super().__init__()
        self.decoder, self.std = model.autoencoder.decoder, model.autoencoder.latent_std

    def forward(self, z: Tensor) -> Tensor:
        return ((self.decoder(z * self.std) + 1) / 2).clamp(0, 1)


class LatentDiffusion(Diffusion):
    """A diffusion U-Net on the latents of the ``autoencoder`` parent run."""

    config_class: ClassVar[type[LatentDiffusionConfig]] = LatentDiffusionConfig
    family: ClassVar[str] = "latent-diffusion"
    parent_roles: ClassVar[tuple[str, ...]] = ("autoencoder",)
    export_formats: ClassVar[tuple[str, ...]] = ("onnx", "hf")

    @property
    def space(self) -> tuple[int, int, int]:
        s = self.config.image_size // self.config.latent_factor
        return (self.config.latent_channels, s, s)

    def attach_parents(self, parents: dict[str, GenerativeModel]) -> None:
        """Stand on an ``autoencoder`` run of this image shape with these latent channels and factor."""
        super().attach_parents(parents)
        ae = parents["autoencoder"]
        if ae.family != "autoencoder":
            raise ConfigError(f"parents.autoencoder must be an autoencoder run, got family {ae.family!r}",
                              key="parents.autoencoder")
        for mine, theirs in (("channels", "channels"), ("image_size", "image_size"),
                             ("latent_channels", "latent_channels"), ("latent_factor", "factor")):
            if getattr(self.config, mine) != getattr(ae.config, theirs):
                raise ConfigError(f"model.{mine} is {getattr(self.config, mine)} but the autoencoder run's "
                                  f"{theirs} is {getattr(ae.config, theirs)}", key=f"model.{mine}")

    @property
    def autoencoder(self) -> GenerativeModel:
        return self.parents["autoencoder"]

    def to_space(self, x: Tensor) -> Tensor:
        """Images [B, C, S, S] in [0, 1] → scaled latent means [B, Z, S/f, S/f]."""
        ae = self.autoencoder
        return ae.encode(x.to(self.device)).detach() / ae.latent_std

    def from_space(self, h: Tensor) -> Tensor:
        ae = self.autoencoder
        return ae.decode(h * ae.latent_std)

    def space_mask(self, fill: Tensor) -> Tensor:
        """A pixel is generated where any pixel of its f × f cell is."""
        f = self.config.latent_factor
        return F.max_pool2d(fill.float(), f).bool()

    def onnx_graphs(self) -> OnnxGraphs:
        """The diffusion graphs on latents, and ``decoder``: scaled latents z float32 [B, Z, S/f, S/f] → images
        float32 [B, C, S, S] in [0, 1] (the autoencoder's decoder, so the folder holds the whole chain)."""
        graphs = super().onnx_graphs()
        z = torch.randn(2, *self.space, device=self.device)
        graphs["decoder"] = (_Decoder(self), (z,), ["z"], ["images"], {"z": {0: "batch"}, "images": {0: "batch"}})
        return graphs

    def describe_likelihood(self, *, k: int | None = None) -> Likelihood | None:
        return None

    def log_likelihood(self, batch, *, generator=None, k=None) -> Tensor:  # noqa: ANN001 - the family's signature
        raise NotImplementedError("the latent-diffusion family has no likelihood bound here (its autoencoder is "
                                  "not a likelihood model)")
