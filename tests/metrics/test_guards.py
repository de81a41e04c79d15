"""The sample-size policy: refuse N < 2 and N < D (unless allowed), KID subsets > N; always remind about N."""

from __future__ import annotations

import pytest
import torch

from genforge.metrics.guards import SampleSizeError, as_features, check_sample_sizes


def test_adequate_sizes_give_only_the_equal_n_reminder():
    warnings = check_sample_sizes(50_000, 50_000, 2048)
    assert len(warnings) == 1 and "same N" in warnings[0]


def test_small_and_unequal_sizes_are_warned_about():
    warnings = check_sample_sizes(5000, 6000, 2048)
    assert any("differ in size" in w for w in warnings)
    assert any("biased upward" in w for w in warnings)


def test_fewer_samples_than_dimensions_is_refused_unless_allowed():
    with pytest.raises(SampleSizeError, match="D=2048"):
        check_sample_sizes(1000, 50_000, 2048, kid_subset_size=None)
    warnings = check_sample_sizes(1000, 50_000, 2048, allow_small=True)
    assert any(w.startswith("WARNING") and "rank-deficient" in w for w in warnings)


def test_hard_limits():
    assert issubclass(SampleSizeError, ValueError)
    with pytest.raises(SampleSizeError, match="n_generated=1"):
        check_sample_sizes(1, 100, 2, kid_subset_size=None)
    with pytest.raises(SampleSizeError, match="kid_subset_size=1000"):
        check_sample_sizes(500, 20_000, 64)
    assert check_sample_sizes(500, 20_000, 64, kid_subset_size=500)


def test_as_features_checks_shape_and_values():
    assert as_features([[1, 2], [3, 4]], "x").dtype == torch.float64
    with pytest.raises(ValueError, match="2-D"):
        as_features(torch.ones(3), "x")
    with pytest.raises(ValueError, match="1 of 2 rows"):
        as_features(torch.tensor([[1.0, float("inf")], [0.0, 0.0]]), "x")
