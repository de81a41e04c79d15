"""KID: unbiased near 0 for one distribution, positive for shifted ones, equal to a direct O(n^2) sum, seeded."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from genforge.metrics.guards import SampleSizeError
from genforge.metrics.kid import kid


def direct_mmd2(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, summed pair by pair."""
    m, d = a.shape

    def k(x, y):
        return (float(np.dot(x, y)) / d + 1.0) ** 3

    xx = sum(k(a[i], a[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(b[i], b[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    xy = sum(k(a[i], b[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_on_whole_sets_equals_the_direct_sum():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((25, 5)), rng.standard_normal((25, 5)) + 0.3
    mean, std = kid(a, b, subsets=3, subset_size=25)  # each subset is the whole set, in some order
    assert mean == pytest.approx(direct_mmd2(a, b), rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g)
    mean, std = kid(a, b, subsets=10, subset_size=200)
    assert abs(mean) < 3 * std
    shifted_mean, shifted_std = kid(a, b + 0.5, subsets=10, subset_size=200)
    assert shifted_mean > 5 * max(shifted_std, std)


def test_kid_is_seeded_and_leaves_the_global_rng_alone():
    a, b = torch.randn(200, 4), torch.randn(150, 4)
    state = torch.get_rng_state()
    first = kid(a, b, subsets=5, subset_size=50, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert kid(a, b, subsets=5, subset_size=50, seed=3) == first
    assert kid(a.numpy(), b.numpy(), subsets=5, subset_size=50, seed=3) == pytest.approx(first, rel=1e-6)
    assert kid(a, b, subsets=5, subset_size=50, seed=4) != first


def test_kid_refuses_a_subset_larger_than_the_sets():
    with pytest.raises(SampleSizeError, match="subset_size=100 exceeds the sets' sizes \\(200 and 80\\)"):
        kid(torch.randn(200, 4), torch.randn(80, 4), subset_size=100)
    with pytest.raises(ValueError, match="subset_size"):
        kid(torch.randn(20, 4), torch.randn(20, 4), subset_size=1)
    with pytest.raises(ValueError, match="dimension"):
        kid(torch.randn(20, 4), torch.randn(20, 5), subset_size=10)
