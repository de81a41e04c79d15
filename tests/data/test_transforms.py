"""Resize + centre-crop, channel conversion and seeded splits on uint8 tensors."""

from __future__ import annotations

import torch

from genforge.data.transforms import convert_channels, resize_center_crop, shuffled_subset, split_indices


def test_resize_shapes_and_constant_images():
    x = torch.full((3, 2, 28, 28), 77, dtype=torch.uint8)
    out = resize_center_crop(x, 32)
    assert out.shape == (3, 2, 32, 32) and out.dtype == torch.uint8 and (out == 77).all()
    assert (resize_center_crop(x, 7) == 77).all()
    assert resize_center_crop(x, 28).equal(x)


def test_downscale_is_antialiased():
    stripes = torch.zeros(1, 1, 64, 64, dtype=torch.uint8)
    stripes[..., ::2] = 255  # 1-pixel stripes would alias to black or white without a low-pass filter
    out = resize_center_crop(stripes, 8)
    assert (out.float() - 127.5).abs().max() < 10


def test_crop_is_centred():
    x = torch.zeros(1, 1, 10, 20, dtype=torch.uint8)
    x[..., 5:15] = 255
    assert (resize_center_crop(x, 10) == 255).all()


def test_channel_conversions():
    gray = torch.tensor([0, 100, 255], dtype=torch.uint8).view(3, 1, 1, 1)
    rgb = convert_channels(gray, 3)
    assert rgb[:, :, 0, 0].tolist() == [[0, 0, 0], [100, 100, 100], [255, 255, 255]]
    assert convert_channels(gray, 4)[:, 3].flatten().tolist() == [255, 255, 255]
    assert convert_channels(rgb, 1).equal(gray)
    colour = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=torch.uint8).view(3, 3, 1, 1)
    assert convert_channels(colour, 1).flatten().tolist() == [76, 150, 29]  # Pillow's luma
    rgba = torch.tensor([200, 100, 50, 128], dtype=torch.uint8).view(1, 4, 1, 1)
    assert convert_channels(rgba, 3).flatten().tolist() == [100, 50, 25]  # over black


def test_split_indices_stratified():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    train, test = split_indices(100, 0.2, 0, labels)
    assert len(test) == 20 and sorted(train.tolist() + test.tolist()) == list(range(100))
    assert torch.bincount(labels[test]).tolist() == [10, 6, 4]
    again, _ = split_indices(100, 0.2, 0, labels)
    other, _ = split_indices(100, 0.2, 1, labels)
    assert again.equal(train) and not other.equal(train)
    tiny_train, tiny_test = split_indices(2, 0.1, 0)
    assert len(tiny_train) == 1 and len(tiny_test) == 1


def test_shuffled_subset():
    assert shuffled_subset(10, 4, 0).equal(shuffled_subset(10, 4, 0))
    assert sorted(shuffled_subset(10, 20, 0).tolist()) == list(range(10))
