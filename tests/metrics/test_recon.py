"""MSE / PSNR closed forms; SSIM against hand computations and torchmetrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genforge.metrics.recon import mse, psnr, ssim, ssim_per_image, ssim_window


def rand_images(n, c, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g, dtype=torch.float64)


def hand_ssim_valid(x: np.ndarray, y: np.ndarray, size: int, sigma: float, data_range: float = 1.0) -> float:
    """Wang et al.'s SSIM for one single-channel image pair [H, W], window by window, valid positions only."""
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            px, py = x[i : i + size, j : j + size], y[i : i + size, j : j + size]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            values.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_mse_and_psnr_of_a_known_error():
    x = torch.full((2, 3, 8, 8), 0.5, dtype=torch.float64)
    y = x + 0.1
    assert mse(x, y) == pytest.approx(0.01, rel=1e-9)
    assert psnr(x, y) == pytest.approx(20.0, rel=1e-9)
    assert psnr(255 * x, 255 * y, data_range=255.0) == pytest.approx(20.0, rel=1e-9)  # same error / range


def test_psnr_is_averaged_per_image():
    x = torch.full((2, 1, 8, 8), 0.5, dtype=torch.float64)
    y = x.clone()
    y[0] += 0.1  # MSE 1e-2 → 20 dB
    y[1] += 0.01  # MSE 1e-4 → 40 dB
    assert psnr(x, y) == pytest.approx(30.0, rel=1e-9)  # not 10 log10(1 / 5.05e-3) ≈ 22.97
    assert psnr(x, x) == math.inf


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("side", [7, 16])
@pytest.mark.parametrize("padding", ["valid", "reflect"])
def test_ssim_of_an_image_with_itself_is_one(channels, side, padding):
    x = rand_images(2, channels, side, side)
    assert ssim(x, x, padding=padding) == pytest.approx(1.0, abs=1e-12)


def test_ssim_valid_mode_matches_a_window_by_window_computation():
    x, y = rand_images(1, 1, 12, 13, seed=1), rand_images(1, 1, 12, 13, seed=2)
    y = 0.5 * x + 0.5 * y  # correlated
    expected = hand_ssim_valid(x[0, 0].numpy(), y[0, 0].numpy(), 11, 1.5)
    assert ssim(x, y) == pytest.approx(expected, rel=1e-10)


def test_ssim_averages_channels_and_shrinks_the_window_for_small_images():
    assert ssim_window(28, 28) == (11, 1.5)
    assert ssim_window(7, 9) == (7, 1.5 * 7 / 11)
    assert ssim_window(10, 30) == (9, 1.5 * 9 / 11)
    x, y = rand_images(1, 3, 7, 7, seed=3), rand_images(1, 3, 7, 7, seed=4)
    size, sigma = ssim_window(7, 7)
    expected = np.mean([hand_ssim_valid(x[0, c].numpy(), y[0, c].numpy(), size, sigma) for c in range(3)])
    assert ssim(x, y) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="at least 7"):
        ssim(rand_images(1, 1, 6, 20), rand_images(1, 1, 6, 20))


def test_ssim_reflect_mode_matches_torchmetrics():
    functional = pytest.importorskip("torchmetrics.functional.image")
    x = rand_images(3, 3, 32, 32, seed=5)
    y = (x + 0.2 * rand_images(3, 3, 32, 32, seed=6)).clamp(0, 1)
    expected = functional.structural_similarity_index_measure(x, y, data_range=1.0, reduction="none")
    np.testing.assert_allclose(ssim_per_image(x, y, padding="reflect").numpy(), expected.numpy(), rtol=1e-6)


def test_image_inputs_are_validated():
    x = rand_images(1, 1, 8, 8)
    with pytest.raises(ValueError, match="outside"):
        ssim(x, x + 1.0)
    with pytest.raises(ValueError, match="same shape"):
        mse(x, rand_images(1, 1, 8, 9))
    with pytest.raises(TypeError, match="uint8"):
        psnr((x * 255).to(torch.uint8), x)
    with pytest.raises(ValueError, match="N, C, H, W"):
        ssim(x[0], x[0])
    with pytest.raises(ValueError, match="padding"):
        ssim(x, x, padding="same")
