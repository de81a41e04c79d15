"""Inpainting by latent optimisation, for families that render images from Gaussian latents (GAN, VAE).

The latent z of each image is fitted to its known pixels by maximum a posteriori estimation: minimise
``nll(render(z, y) at the known pixels) + prior · ½‖z‖²`` with Adam, from several starts per image
(a conditional model given no label fits the class too, as softmax class weights, then fixes it to the
most likely class), keeping the start of lowest final objective (Yeh et al. 2017, "Semantic image inpainting with deep generative models", without their
discriminator term). The fill is the rendering at the chosen z; known pixels are returned unchanged.

Shape legend: B images, M starts per image, L latent size, K classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from genforge.config import FieldError
from genforge.models import rng
from genforge.models.base import SampleOptions


@dataclass(kw_only=True)
class LatentFitOptions(SampleOptions):
    """``steps``: Adam steps; ``lr``: its learning rate; ``restarts``: starts per image; ``prior``: weight of
    the N(0, I) prior against the pixel term."""

    steps: int = 100
    lr: float = 0.05
    restarts: int = 2
    prior: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 100_000:
            raise FieldError("steps", f"must be in [1, 100000], got {self.steps}")
        if not 0 < self.lr <= 10:
            raise FieldError("lr", f"must be in (0, 10], got {self.lr}")
        if not 1 <= self.restarts <= 1000:
            raise FieldError("restarts", f"must be in [1, 1000], got {self.restarts}")
        if not 0 <= self.prior <= 1e6:
            raise FieldError("prior", f"must be in [0, 1e6], got {self.prior}")


PixelNLL = Callable[[Tensor, Tensor, Tensor], Tensor]  # (render output, target, known mask) → per-image nats [N]


PIXEL_SIGMA = 0.1  # σ of the Gaussian pixel likelihood on [0, 1] for families without their own


def gaussian_pixel_nll(out: Tensor, target: Tensor, known: Tensor) -> Tensor:
    """Σ over known pixels of (out - target)² / (2 σ²), σ = :data:`PIXEL_SIGMA`: [N, C, S, S] → [N] (nats + const)."""
    return ((out - target).pow(2) * known).flatten(1).sum(dim=1) / (2 * PIXEL_SIGMA ** 2)


def candidate_labels(b: int, condition: Tensor | None, num_classes: int, restarts: int,
                     device: torch.device) -> tuple[Tensor | None, int]:
    """Labels of every candidate start (image-major) and the number M = ``restarts`` of candidates per image:
    the given labels repeated, None for an unconditional model, or — a conditional model given no label —
    uniform class weights float [B·M, K] that :func:`fit_latents` optimises with z."""
    if not num_classes:
        return None, restarts
    if condition is not None:
        return condition.to(device).repeat_interleave(restarts), restarts
    return torch.full((b * restarts, num_classes), 1.0 / num_classes, device=device), restarts


def fit_latents(render: Callable[[Tensor, Tensor | None], Tensor], nll: PixelNLL, target: Tensor, known: Tensor,
                z_start: Tensor, y: Tensor | None, opts: LatentFitOptions) -> tuple[Tensor, Tensor | None]:
    """MAP latents of B images from N = B·M candidate starts (image-major: rows i·M .. i·M+M-1 are image i's).

    When ``y`` holds class weights [N, K] (a conditional model given no label) the class is fitted too:
    softmax logits are optimised with z for ``steps``, then the label is fixed to the most likely class
    and z alone is refined for another ``steps // 3``.

    Args:
        render: (z [N, L], labels [N] or class weights [N, K] or None) → decoder output [N, C, S, S].
        nll: per-candidate negative log-likelihood of the known pixels.
        target: images [B, C, S, S]; known: float [B, 1, S, S], 1 where the pixel is known.
        z_start: [N, L] starts; y: labels [N], class weights [N, K] or None.

    Returns:
        The best candidate's (z [B, L], labels int64 [B] or None) per image.
    """
    b, n = target.shape[0], z_start.shape[0]
    m = n // b
    tgt = target.repeat_interleave(m, dim=0)  # [N, C, S, S]
    msk = known.repeat_interleave(m, dim=0)
    z = z_start.detach().clone().requires_grad_(True)
    soft = y is not None and y.is_floating_point()
    logits = torch.zeros_like(y).requires_grad_(True) if soft else None  # [N, K]

    def objective(labels: Tensor | None) -> Tensor:
        return nll(render(z, labels), tgt, msk) + opts.prior * 0.5 * z.pow(2).sum(dim=1)  # [N]

    def run(steps: int, params: list[Tensor], labels: Callable[[], Tensor | None]) -> None:
        optim = torch.optim.Adam(params, lr=opts.lr)
        for _ in range(steps):
            optim.zero_grad(set_to_none=True)
            objective(labels()).sum().backward()
            optim.step()

    with torch.enable_grad():
        if soft:
            run(opts.steps, [z, logits], lambda: logits.softmax(dim=1))
            y = logits.detach().argmax(dim=1)
            run(max(1, opts.steps // 3), [z], lambda: y)
        else:
            run(opts.steps, [z], lambda: y)
    with torch.no_grad():
        best = objective(y).view(b, m).argmin(dim=1) + torch.arange(b, device=z.device) * m  # [B]
    return z.detach()[best], (None if y is None else y[best])


def random_starts(b: int, m: int, latent_dim: int, generator: rng.Generator, device: torch.device) -> Tensor:
    """Standard normal starts [B·M, L] (image-major), drawn on the CPU as [B, M·L] so each image's starts
    come from its own generator under :class:`~genforge.models.rng.RowGenerators`."""
    return rng.randn((b, m * latent_dim), generator).view(b * m, latent_dim).to(device)


def composite(x: Tensor, filled: Tensor, fill: Tensor) -> Tensor:
    """``filled`` where ``fill`` (bool [B, 1, S, S]) is set, the original ``x`` elsewhere: [B, C, S, S]."""
    return torch.where(fill, filled, x)
