"""Unit conversions of negative log-likelihoods."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genforge.metrics.nll import bits_per_char, bits_per_dim, nats_to_bits, perplexity


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    for vocab in (2, 65, 50257):
        assert perplexity(math.log(vocab)) == pytest.approx(vocab, rel=1e-12)
    assert perplexity(torch.tensor(math.log(65.0))) == pytest.approx(65.0, rel=1e-6)
    assert perplexity(1e6) == math.inf


def test_bits_per_dim_and_per_char():
    dims = 3 * 32 * 32
    nll = torch.tensor([2.0, 4.0]) * dims * math.log(2)  # 2 and 4 bits per dimension
    assert bits_per_dim(nll, dims) == pytest.approx(3.0, rel=1e-6)
    assert bits_per_dim(np.array([dims * math.log(2)]), dims) == pytest.approx(1.0, rel=1e-12)
    assert bits_per_char(1000 * math.log(2) * 1.5, 1000) == pytest.approx(1.5, rel=1e-12)
    assert nats_to_bits(math.log(8)) == pytest.approx(3.0, rel=1e-12)
    assert torch.allclose(nats_to_bits(torch.tensor([math.log(2)])), torch.tensor([1.0]))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="vector"):
        bits_per_dim(torch.ones(2, 2), 4)
    with pytest.raises(ValueError, match="dims"):
        bits_per_dim(torch.ones(2), 0)
    with pytest.raises(ValueError, match="finite"):
        bits_per_dim(torch.tensor([1.0, float("inf")]), 4)
    with pytest.raises(ValueError, match="n_chars"):
        bits_per_char(10.0, 0)
    with pytest.raises(ValueError, match="finite"):
        perplexity(float("nan"))
