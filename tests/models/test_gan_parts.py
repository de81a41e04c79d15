"""DiffAugment and minibatch standard deviation: shapes, invariants and gradients."""

from __future__ import annotations

import pytest
import torch

from genforge.models.gan_parts import MinibatchStd, diff_augment, parse_augment
from genforge.models.layers import upsample_conv


def test_parse_augment_names_the_unknown_policy():
    assert parse_augment(" translation, cutout ") == ("translation", "cutout")
    assert parse_augment("") == ()
    with pytest.raises(ValueError, match="unknown augment 'rotate'"):
        parse_augment("translation,rotate")


def test_translation_moves_whole_images_and_fills_with_black():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 16, 16) * 2 - 1
    out = diff_augment(x, ("translation",))
    assert out.shape == x.shape
    for i in range(64):  # each image is its own shift of the input: find it among all shifts of ±2
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = torch.full_like(x[i], -1.0)
                ys, xs = slice(max(0, dy), 16 + min(0, dy)), slice(max(0, dx), 16 + min(0, dx))
                yd, xd = slice(max(0, -dy), 16 + min(0, -dy)), slice(max(0, -dx), 16 + min(0, -dx))
                ref[:, yd, xd] = x[i][:, ys, xs]
                found |= torch.equal(out[i], ref)
        assert found, i


def test_cutout_zeroes_one_square_per_image_and_keeps_the_rest():
    torch.manual_seed(1)
    x = torch.rand(32, 3, 16, 16) + 0.5  # no pixel is 0 before the cutout
    out = diff_augment(x, ("cutout",))
    zero = out == 0
    assert torch.equal(zero[:, 0], zero[:, 1])  # the same square in every channel
    kept = ~zero
    assert torch.equal(out[kept], x[kept])
    counts = zero[:, 0].flatten(1).sum(1)
    assert counts.max() == 64 and counts.min() > 0  # 8×8 squares, clipped at the border


def test_augmentation_is_differentiable_so_the_generator_learns_through_it():
    x = (torch.rand(8, 1, 12, 12) * 2 - 1).requires_grad_(True)
    diff_augment(x, ("translation", "cutout", "brightness", "contrast")).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_minibatch_std_is_the_group_spread_and_zero_for_identical_images():
    mb = MinibatchStd(group_size=4)
    same = torch.randn(1, 5, 3, 3).repeat(8, 1, 1, 1)
    out = mb(same)
    assert out.shape == (8, 6, 3, 3) and torch.equal(out[:, :5], same)
    assert out[:, 5].abs().max() < 1e-3  # sqrt(1e-8) from the epsilon
    h = torch.randn(8, 5, 3, 3)
    stat = mb(h)[:, 5, 0, 0]
    groups = h.view(4, 2, -1)  # members j, j + 2, j + 4, j + 6 form group j % 2
    expected = groups.std(dim=0, unbiased=False).mean(dim=1)  # [2]
    assert torch.allclose(stat, expected.repeat(4), atol=1e-4)
    assert mb(torch.randn(3, 5, 3, 3)).shape == (3, 6, 3, 3)  # 3 images: groups of 3
    assert torch.equal(mb(torch.randn(1, 5, 3, 3))[:, 5], torch.zeros(1, 3, 3))


def test_resize_conv_has_no_checkerboard_for_a_constant_input():
    torch.manual_seed(0)
    for kind, flat in (("resize", True), ("deconv", False)):
        up = upsample_conv(4, 2, kind, bias=False)
        out = up(torch.ones(1, 4, 6, 6))[0, :, 2:-2, 2:-2]  # away from the zero-padded border
        assert (out.std(dim=(1, 2)).max() < 1e-5) == flat, kind  # resize: constant; deconv: a periodic pattern
