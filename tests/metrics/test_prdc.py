"""Precision/recall/density/coverage equal the ``prdc`` package's values, in one pass and in blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genforge.metrics.guards import SampleSizeError
from genforge.metrics.prdc import density_coverage, prdc, precision_recall, precision_recall_density_coverage

KEYS = ("precision", "recall", "density", "coverage")


def features(seed: int, n_real: int, n_fake: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n_real, dim))
    fake = 1.2 * rng.standard_normal((n_fake, dim)) + 0.2  # overlapping but different
    return real, fake


@pytest.mark.parametrize(
    "n_real,n_fake,dim,k", [(200, 150, 8, 1), (150, 230, 16, 3), (300, 260, 32, 5), (120, 121, 4, 10)]
)
def test_prdc_equals_the_reference_package(n_real, n_fake, dim, k, capsys):
    reference = pytest.importorskip("prdc")
    real, fake = features(k, n_real, n_fake, dim)
    expected = reference.compute_prdc(real, fake, k)
    got = prdc(real, fake, k)
    for key in KEYS:
        assert got[key] == pytest.approx(float(expected[key]), abs=1e-6), key
    assert 0 < got["precision"] < 1 and got["coverage"] > 0  # a non-trivial case


def test_one_pass_and_the_split_functions_agree(capsys):
    reference = pytest.importorskip("prdc")
    real, fake = features(0, 180, 170, 12)
    both = precision_recall_density_coverage(torch.from_numpy(real), fake, pr_k=3, dc_k=5)
    pr, dc = precision_recall(real, fake, k=3), density_coverage(real, fake, k=5)
    assert both == {**pr, **dc, "pr_k": 3, "dc_k": 5}
    assert pr["precision"] == pytest.approx(float(reference.compute_prdc(real, fake, 3)["precision"]), abs=1e-6)
    assert dc["density"] == pytest.approx(float(reference.compute_prdc(real, fake, 5)["density"]), abs=1e-6)


def test_small_blocks_give_identical_results(monkeypatch):
    real, fake = features(1, 97, 83, 6)
    whole = prdc(real, fake, 3)
    monkeypatch.setattr("genforge.metrics.prdc.BLOCK_BYTES", 8 * 97 * 7)  # 7-row blocks, ragged last block
    assert prdc(real, fake, 3) == whole


def test_identical_sets_have_full_precision_recall_and_coverage():
    real, _ = features(2, 100, 1, 5)
    got = prdc(real, real, 3)
    assert got["precision"] == got["recall"] == got["coverage"] == 1.0


def test_too_few_samples_for_k_are_refused():
    with pytest.raises(SampleSizeError, match="nearest_k=5"):
        prdc(np.zeros((5, 3)), np.ones((50, 3)), 5)
    with pytest.raises(ValueError, match="nearest_k"):
        prdc(np.zeros((5, 3)), np.ones((5, 3)), 0)
