"""The evaluator recipe's augmentation: seeded, label-preserving in shape and range, the pure shift without rotation."""

from __future__ import annotations

import pytest
import torch

from genforge.evaluation.features.evaluator_training import EvaluatorTrainConfig, _random_affine, _random_shift


def test_affine_augmentation_is_seeded_and_stays_in_range():
    x = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    a = _random_affine(x, 2, 10.0, 0.1, torch.Generator().manual_seed(0))
    b = _random_affine(x, 2, 10.0, 0.1, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.dtype == torch.float32 and torch.equal(a, b)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert not torch.allclose(a, x.float() / 255)  # it did transform


def test_without_rotation_or_zoom_it_is_the_pure_shift():
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    a = _random_affine(x, 1, 0.0, 0.0, torch.Generator().manual_seed(3))
    b = _random_shift(x, 1, torch.Generator().manual_seed(3)).float() / 255
    assert torch.equal(a, b)


def test_identity_parameters_reproduce_the_image():
    x = torch.randint(0, 256, (4, 1, 12, 12), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    out = _random_affine(x, 0, 1e-9, 1e-9, g)  # angle and zoom ~0, no shift: bilinear at pixel centres
    assert torch.allclose(out, x.float() / 255, atol=1e-5)


@pytest.mark.parametrize("field, value", [("rotate", -1.0), ("rotate", 200.0), ("scale", 1.0), ("scale", -0.1)])
def test_out_of_range_augmentation_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        EvaluatorTrainConfig(**{field: value})
