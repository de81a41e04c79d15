"""Shared convolutional blocks: the resolution plan, encoder/decoder sizes, norms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genforge.models.layers import (
    ConditionalBatchNorm2d,
    ConvDecoder,
    ConvEncoder,
    center_crop,
    plan_resolution,
    spectral_norm_,
    stage_widths,
)


@pytest.mark.parametrize("size, base, stages", [
    (4, 4, 0), (7, 7, 0), (8, 4, 1), (16, 4, 2), (28, 7, 2), (32, 4, 3), (64, 4, 4),
    (27, 7, 2), (15, 8, 1), (100, 7, 4), (1024, 16, 6),
])
def test_plan_resolution(size, base, stages):
    plan = plan_resolution(size)
    assert (plan.base, plan.stages) == (base, stages)
    assert plan.padded >= size and plan.padded - size < 2 ** stages


def test_plan_rejects_tiny_images():
    with pytest.raises(ValueError, match="image_size"):
        plan_resolution(3)


def test_stage_widths_double_and_cap():
    assert stage_widths(32, 3, 512) == [32, 64, 128]
    assert stage_widths(256, 4, 512) == [256, 512, 512, 512]
    assert stage_widths(8, 0, 512) == [8]


def test_center_crop():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(center_crop(x, 4), x)
    assert torch.equal(center_crop(x, 2), x[..., 1:3, 1:3])


@pytest.mark.parametrize("size", [4, 5, 7, 8, 9, 12, 15, 16, 17, 27, 28, 31, 32, 33, 48, 64])
def test_encoder_and_decoder_fit_every_size(size):
    plan = plan_resolution(size)
    enc = ConvEncoder(3, plan, 2, 8, norm="group", act=nn.SiLU)
    h = enc(torch.zeros(2, 3, size, size))
    assert h.shape == (2, enc.out_channels, enc.out_size, enc.out_size)
    assert 2 <= enc.out_size <= 8
    dec = ConvDecoder(5, 3, plan, 2, 8, norm="batch", act=nn.ReLU, num_classes=4)
    assert dec(torch.zeros(2, 5), torch.tensor([0, 3])).shape == (2, 3, size, size)


def test_conditional_batchnorm_is_per_class():
    norm = ConditionalBatchNorm2d(3, num_classes=2)
    with torch.no_grad():
        norm.gain.weight[1] = 2.0
        norm.bias.weight[1] = 1.0
    h = torch.randn(4, 3, 5, 5)
    y = torch.tensor([0, 1, 0, 1])
    out = norm(h, y)
    plain = nn.functional.batch_norm(h, None, None, training=True)
    torch.testing.assert_close(out[y == 0], plain[y == 0])
    torch.testing.assert_close(out[y == 1], 2 * plain[y == 1] + 1)


def test_spectral_norm_bounds_the_largest_singular_value():
    lin = nn.Linear(16, 16)
    with torch.no_grad():
        lin.weight.mul_(10)
    spectral_norm_(lin)
    for _ in range(20):  # power iterations run in training-mode forwards
        lin(torch.zeros(1, 16))
    assert float(torch.linalg.matrix_norm(lin.weight.detach(), ord=2)) == pytest.approx(1.0, rel=1e-3)
