"""Inception Score on constructed predictions, and mode coverage on constructed labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genforge.metrics.scores import KL_EPS, inception_score, mode_coverage


def test_uniform_predictions_score_one():
    mean, std = inception_score(torch.zeros(100, 7))
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_confident_predictions_spread_evenly_score_k_even_with_huge_logits():
    k, splits = 5, 10
    labels = torch.arange(k * splits * 4) % k  # every chunk of 20 holds each class 4 times
    logits = 1e4 * torch.nn.functional.one_hot(labels, k).double()
    mean, std = inception_score(logits, splits)
    assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)


def test_two_samples_match_a_hand_computation():
    p = np.array([[0.9, 0.1], [0.2, 0.8]])
    q = p.mean(axis=0)
    kl = (p * np.log(p / q)).sum(axis=1)
    mean, _ = inception_score(np.log(p), splits=1)
    assert mean == pytest.approx(math.exp(kl.mean()), rel=1e-12)


def test_score_lies_in_one_to_k_and_stays_finite_for_extreme_logits():
    g = torch.Generator().manual_seed(0)
    mean, std = inception_score(torch.randn(500, 10, generator=g) * 3, splits=5)
    assert 1.0 <= mean <= 10.0 and std >= 0
    extreme = 1e4 * torch.sign(torch.randn(200, 10, generator=g))
    mean, std = inception_score(extreme.float(), splits=4)
    assert math.isfinite(mean) and math.isfinite(std) and 1.0 <= mean <= 10.0


def test_splits_and_shuffling():
    labels = torch.arange(40) // 10  # class by class: each contiguous chunk of 10 holds one class
    logits = 50.0 * torch.nn.functional.one_hot(labels, 4).double()
    assert inception_score(logits, 4)[0] == pytest.approx(1.0, abs=1e-9)
    shuffled, _ = inception_score(logits, 4, shuffle_seed=0)
    assert shuffled > 2.0
    assert inception_score(logits, 4, shuffle_seed=0) == inception_score(logits, 4, shuffle_seed=0)
    with pytest.raises(ValueError, match="splits"):
        inception_score(logits, 41)
    with pytest.raises(ValueError, match="NaN"):
        inception_score(torch.full((4, 3), float("nan")))


def test_mode_coverage_counts_classes_above_the_threshold():
    # 10 classes, default threshold 0.1 / 10 = 1% of 1000 samples = 10 samples
    gen = np.concatenate([np.repeat(np.arange(5), 196), np.full(9, 5), np.full(11, 6)])  # 980 + 9 + 11
    real = np.repeat(np.arange(10), 30)
    out = mode_coverage(gen, real, num_classes=10)
    assert out["classes_hit"] == 6  # 0..4 and 6; class 5 has 0.9% < 1%
    assert out["threshold"] == pytest.approx(0.01)
    assert out["n_generated"] == 1000 and out["n_real"] == 300
    p = np.bincount(gen, minlength=10) / 1000
    expected_kl = sum(pc * math.log(pc / 0.1) for pc in p if pc > 0)
    assert out["kl"] == pytest.approx(expected_kl, abs=1e-7)


def test_mode_coverage_from_probabilities_and_a_missing_real_class():
    gen = torch.tensor([0, 1, 2, 2])
    probs = torch.nn.functional.one_hot(gen, 3).float() * 0.8 + 0.05
    real = torch.tensor([0, 0, 1, 1])  # class 2 never occurs among real samples
    a, b = mode_coverage(gen, real, 3), mode_coverage(probs, real, 3)
    assert a == b and a["classes_hit"] == 3
    assert a["kl"] == pytest.approx(0.25 * math.log(0.5) * 2 + 0.5 * math.log(0.5 / KL_EPS), rel=1e-6)
    assert mode_coverage(real, real, 3)["kl"] == pytest.approx(0.0, abs=1e-12)


def test_mode_coverage_rejects_bad_labels():
    with pytest.raises(ValueError, match="outside"):
        mode_coverage(np.array([0, 3]), np.array([0, 1]), num_classes=3)
    with pytest.raises(ValueError, match="columns"):
        mode_coverage(np.ones((2, 4)), np.array([0, 1]), num_classes=3)
    with pytest.raises(ValueError, match="integer"):
        mode_coverage(np.array([0.0, 1.0]), np.array([0, 1]), num_classes=3)
