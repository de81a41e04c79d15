"""Discriminator-side tools of the GAN family: differentiable augmentation and minibatch standard deviation.

- :func:`diff_augment` — DiffAugment (Zhao et al. 2020, "Differentiable
  Augmentation for Data-Efficient GAN Training"): the same random, differentiable
  transformations are applied to every image the discriminator sees, real and
  generated, in both the discriminator and the generator step. The
  discriminator cannot memorise a small training set, and because the
  transformations are differentiable the generator still learns from its
  gradients; since they are applied to fakes as well, generated images are not
  pushed towards augmented-looking ones (no "leaking").
- :class:`MinibatchStd` — minibatch standard deviation (Karras et al. 2018,
  ProGAN): one extra feature map holding how much the images of a small group
  differ, so a discriminator can tell a batch of near-copies from real variety
  and the generator is pushed towards within-class diversity.

Shape legend: B batch, C channels, S side, F features, s feature side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genforge.config import FieldError
from genforge.models import rng

AUGMENTS = ("translation", "cutout", "brightness", "contrast")


def parse_augment(policy: str) -> tuple[str, ...]:
    """``"translation,cutout"`` → ``("translation", "cutout")``; "" → (); unknown names raise ValueError."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [n for n in names if n not in AUGMENTS]
    if unknown:
        raise ValueError(f"unknown augment {unknown[0]!r}; choose a comma-separated subset of {', '.join(AUGMENTS)}")
    return names


def diff_augment(x: Tensor, policy: tuple[str, ...], *, translation: float = 0.125, cutout: float = 0.5) -> Tensor:
    """Randomly transform a batch, differentiably: x [B, C, S, S] in [-1, 1] → [B, C, S, S].

    Every image draws its own parameters from the global RNG (the trainer seeds it):

    - ``translation``: shift by up to ``translation``·S pixels in each direction, filling with -1 (black);
    - ``cutout``: set one square of side ``cutout``·S (at a random centre, clipped at the border) to 0 (mid-gray);
    - ``brightness``: add U(-0.5, 0.5)·2 in [-1, 1] units (the paper's U(-0.5, 0.5) on [0, 1] images);
    - ``contrast``: scale the deviation from the image mean by U(0.5, 1.5).
    """
    for name in policy:
        if name == "translation":
            x = _translate(x, translation)
        elif name == "cutout":
            x = _cutout(x, cutout)
        elif name == "brightness":
            x = x + (rng.train_rand((x.shape[0], 1, 1, 1), x.device).to(x.dtype) - 0.5) * 2
        elif name == "contrast":
            mean = x.mean(dim=(1, 2, 3), keepdim=True)  # [B, 1, 1, 1]
            x = (x - mean) * (rng.train_rand((x.shape[0], 1, 1, 1), x.device).to(x.dtype) + 0.5) + mean
    return x


def _translate(x: Tensor, ratio: float) -> Tensor:
    """Integer shifts of up to ``ratio``·S pixels per axis, per image (a gather from a padded copy)."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if sh == 0 and sw == 0:
        return x
    dy = rng.train_randint(-sh, sh + 1, (b, 1, 1), x.device)  # [B, 1, 1]
    dx = rng.train_randint(-sw, sw + 1, (b, 1, 1), x.device)
    rows = (torch.arange(h, device=x.device)[None, :, None] + dy + sh).expand(b, h, w)  # [B, H, W] into the padded copy
    cols = (torch.arange(w, device=x.device)[None, None, :] + dx + sw).expand(b, h, w)
    padded = F.pad(x, [sw, sw, sh, sh], value=-1.0)  # [B, C, H + 2sh, W + 2sw]
    flat = rows * padded.shape[-1] + cols  # [B, H, W] indices into the flattened padded image
    out = padded.flatten(2).gather(2, flat.flatten(1)[:, None, :].expand(-1, x.shape[1], -1))  # [B, C, H·W]
    return out.view_as(x)


def _cutout(x: Tensor, ratio: float) -> Tensor:
    """One square of side ``ratio``·S set to 0 per image (multiplied by a 0/1 mask, so gradients flow elsewhere)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = rng.train_randint(0, h + (1 - ch % 2), (b, 1, 1), x.device)  # centres, as in the reference code
    cx = rng.train_randint(0, w + (1 - cw % 2), (b, 1, 1), x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    dy, dx = ys - cy + ch // 2, xs - cx + cw // 2  # position inside the square
    inside = (dy >= 0) & (dy < ch) & (dx >= 0) & (dx < cw)  # [B, H, W]
    return x * (~inside)[:, None].to(x.dtype)


class MinibatchStd(nn.Module):
    """Append the average standard deviation across a group of images as one more feature map.

    h [B, F, s, s] → [B, F + 1, s, s]. With g = the largest divisor of B not
    above ``group_size``, image j's group is the images j mod B/g, j mod B/g + B/g, …
    (ProGAN's strided layout), so its statistic depends only on its own group.
    """

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        if group_size < 1:
            raise FieldError("group_size", f"must be >= 1, got {group_size}")
        self.group_size = group_size

    def forward(self, h: Tensor) -> Tensor:
        b, f, s, _ = h.shape
        g = min(self.group_size, b)
        while b % g:
            g -= 1
        if g < 2:  # a single image has no spread: the statistic is 0
            return torch.cat([h, h.new_zeros(b, 1, s, s)], dim=1)
        grouped = h.float().view(g, b // g, f * s * s)  # group member, group, F·s·s
        centred = grouped - grouped.mean(dim=0)  # (Tensor.var's backward is 10x slower on CPU)
        std = (centred.square().mean(dim=0) + 1e-8).sqrt()  # [B/g, F·s·s]
        stat = std.mean(dim=1).to(h.dtype)  # [B/g]
        return torch.cat([h, stat.repeat(g)[:, None, None, None].expand(b, 1, s, s)], dim=1)  # [B, F + 1, s, s]
