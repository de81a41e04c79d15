"""Reconstruction metrics on images: MSE, PSNR and SSIM.

Inputs are float images [N, C, H, W] (C = 1, 3 or 4, any number works) with
values in [0, data_range] (default [0, 1]); tensors or arrays. Everything is
computed in float64. Every metric is computed per image and then averaged over
the N images (for MSE the two orders agree; for PSNR they do not: torchmetrics'
default pools the MSE over the batch first).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_WINDOW = 11  # Wang et al. 2004: 11 × 11 Gaussian window, sigma 1.5
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_MIN_SIDE = 7  # smallest image side accepted by ssim


def _images(x: Any, name: str, data_range: float) -> Tensor:
    """x as float64 [N, C, H, W]; raise on a bad shape, non-float dtype, NaN, or values outside [0, data_range]."""
    t = (x if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x))).detach().cpu()
    if t.ndim != 4:
        raise ValueError(f"{name} must be images [N, C, H, W], got shape {list(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be float images in [0, {data_range}], got {t.dtype} (convert uint8 first)")
    t = t.double()
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    lo, hi = float(t.min()), float(t.max())
    if lo < 0.0 or hi > data_range:
        raise ValueError(f"{name} has values in [{lo:.4g}, {hi:.4g}], outside [0, {data_range}]; clamp first")
    return t


def _pair(x: Any, y: Any, data_range: float) -> tuple[Tensor, Tensor]:
    if data_range <= 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    a, b = _images(x, "x", data_range), _images(y, "y", data_range)
    if a.shape != b.shape:
        raise ValueError(f"x and y must have the same shape, got {list(a.shape)} and {list(b.shape)}")
    if a.shape[0] == 0:
        raise ValueError("x and y hold no images")
    return a, b


def mse_per_image(x: Any, y: Any, data_range: float = 1.0) -> Tensor:
    """Mean squared error of each image pair: [N, C, H, W] × 2 → float64 [N]."""
    a, b = _pair(x, y, data_range)
    return (a - b).pow(2).flatten(1).mean(dim=1)


def mse(x: Any, y: Any, data_range: float = 1.0) -> float:
    """Mean squared error over all pixels of [N, C, H, W] pairs (squared units of the data)."""
    return float(mse_per_image(x, y, data_range).mean())


def psnr(x: Any, y: Any, data_range: float = 1.0) -> float:
    """Mean over images of 10 log10(data_range^2 / MSE_i), in dB; +inf if any image pair is identical."""
    per_image = 10.0 * torch.log10(data_range**2 / mse_per_image(x, y, data_range))  # (N,), inf where MSE = 0
    return float(per_image.mean())


def psnr_per_image(x: Any, y: Any, data_range: float = 1.0, *, region: Tensor | None = None) -> Tensor:
    """PSNR in dB of each image pair [N, C, H, W] × 2 → float64 [N], over ``region`` (bool [N, 1, H, W])
    when given; an exact match is capped at 100 dB."""
    a, b = _pair(x, y, data_range)
    err = (a - b).pow(2)
    if region is None:
        mse_ = err.flatten(1).mean(dim=1)
    else:
        w = region.to(err.dtype).expand_as(err).flatten(1)
        mse_ = (err.flatten(1) * w).sum(dim=1) / w.sum(dim=1).clamp_min(1)
    return (10 * torch.log10(data_range ** 2 / mse_.clamp_min(1e-10))).clamp_max(100.0)


def ssim_window(height: int, width: int) -> tuple[int, float]:
    """Window side and Gaussian sigma for an image of this size.

    11 and 1.5 (Wang et al.) when both sides are >= 11; otherwise the window is
    the largest odd size fitting the smaller side, and sigma shrinks with it
    (sigma = 1.5 × size / 11) so the window still spans the same ±3.3 sigma.
    Sides below ``SSIM_MIN_SIDE`` (7) are refused.
    """
    side = min(height, width)
    if side < SSIM_MIN_SIDE:
        raise ValueError(f"SSIM needs images of at least {SSIM_MIN_SIDE}×{SSIM_MIN_SIDE} pixels, got {height}×{width}")
    size = min(SSIM_WINDOW, side if side % 2 else side - 1)
    return size, SSIM_SIGMA * size / SSIM_WINDOW


def _gaussian_window(size: int, sigma: float) -> Tensor:
    """Normalised 2-D Gaussian [size, size] (MATLAB ``fspecial('gaussian', size, sigma)``)."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()  # (size,)
    return g[:, None] * g[None, :]


def ssim_per_image(
    x: Any, y: Any, data_range: float = 1.0, *, padding: Literal["valid", "reflect"] = "valid",
    region: Tensor | None = None,
) -> Tensor:
    """SSIM of each image pair (Wang et al. 2004): [N, C, H, W] × 2 → float64 [N].

    Local statistics use a Gaussian window (see :func:`ssim_window`),
    C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = ``data_range``, biased (weighted)
    variances, each channel separately; the SSIM map is averaged over pixels and
    channels.

    Args:
        padding: ``"valid"`` averages only windows fully inside the image (Wang et al.'s
            ``ssim_index.m``; scikit-image crops the same border). ``"reflect"`` pads by
            half a window with reflection and keeps every pixel, which reproduces
            ``torchmetrics.functional.structural_similarity_index_measure`` with its
            defaults for images of at least 11×11.
        region: bool [N, 1, H, W]: average the SSIM map only over these pixels (needs ``"reflect"``,
            whose map covers every pixel); e.g. the inpainted region.
    """
    if region is not None and padding != "reflect":
        raise ValueError("a region SSIM needs padding='reflect' (a map over every pixel)")
    a, b = _pair(x, y, data_range)
    n, c, h, w = a.shape
    size, sigma = ssim_window(h, w)
    kernel = _gaussian_window(size, sigma).expand(c, 1, size, size)  # (C, 1, s, s), one per channel
    if padding == "reflect":
        p = size // 2
        a, b = F.pad(a, (p, p, p, p), mode="reflect"), F.pad(b, (p, p, p, p), mode="reflect")
    elif padding != "valid":
        raise ValueError(f"padding must be 'valid' or 'reflect', got {padding!r}")
    stats = F.conv2d(torch.cat([a, b, a * a, b * b, a * b]), kernel, groups=c)  # (5N, C, H', W')
    mu_a, mu_b, e_aa, e_bb, e_ab = stats.split(n)  # each (N, C, H', W')
    var_a = (e_aa - mu_a**2).clamp(min=0.0)
    var_b = (e_bb - mu_b**2).clamp(min=0.0)
    cov = e_ab - mu_a * mu_b
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    if region is not None:
        w = region.to(ssim_map.dtype).expand_as(ssim_map).flatten(1)  # (N, C·H·W)
        return (ssim_map.flatten(1) * w).sum(dim=1) / w.sum(dim=1).clamp_min(1)
    return ssim_map.flatten(1).mean(dim=1)  # (N,)


def ssim(x: Any, y: Any, data_range: float = 1.0, *, padding: Literal["valid", "reflect"] = "valid") -> float:
    """Mean SSIM over image pairs [N, C, H, W]; see :func:`ssim_per_image`. 1 for identical images."""
    return float(ssim_per_image(x, y, data_range, padding=padding).mean())
