"""FID: identity, symmetry, the Gaussian closed form, singular covariances, torchmetrics, cached stats."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from genforge.metrics.fid import (
    STATS_FORMAT,
    fid,
    frechet_distance,
    gaussian_stats,
    load_stats,
    save_stats,
)
from genforge.metrics.guards import SampleSizeError


def closed_form(mu1, s1, mu2, s2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}) with scipy's sqrtm (independent of our eigen route)."""
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def random_spd(rng: np.random.Generator, d: int, floor: float = 0.1) -> np.ndarray:
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    return a @ a.T + floor * np.eye(d)


def test_gaussian_stats_are_float64_mean_and_unbiased_covariance():
    x = torch.randn(50, 6)
    mu, sigma = gaussian_stats(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(mu, x.double().mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x.double().numpy(), rowvar=False, ddof=1), rtol=1e-10)


def test_gaussian_stats_chunking_matches_one_block(monkeypatch):
    x = np.random.default_rng(0).standard_normal((37, 5)) + 100.0  # large mean: centring must be exact
    mu, sigma = gaussian_stats(x)
    monkeypatch.setattr("genforge.metrics.fid.ROW_CHUNK", 4)
    mu4, sigma4 = gaussian_stats(x)
    np.testing.assert_allclose(mu4, mu, rtol=1e-14)
    np.testing.assert_allclose(sigma4, sigma, rtol=1e-10)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-10)


def test_fid_of_a_set_with_itself_is_zero():
    x = torch.randn(400, 16) * 3 + 1
    _, sigma = gaussian_stats(x)
    assert abs(fid(x, x)) <= 1e-6 * 2 * np.trace(sigma)


def test_fid_is_symmetric():
    a, b = torch.randn(300, 12), torch.randn(250, 12) * 1.5 + 0.3
    assert fid(a, b) == pytest.approx(fid(b, a), rel=1e-10)


def test_frechet_distance_equals_closed_form_on_exact_stats():
    rng = np.random.default_rng(0)
    d = 64
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d, floor=0.01)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(closed_form(mu1, s1, mu2, s2), rel=1e-8)
    # torch inputs give the same float
    t = [torch.from_numpy(v) for v in (mu1, s1, mu2, s2)]
    assert frechet_distance(*t) == frechet_distance(mu1, s1, mu2, s2)


def test_fid_of_gaussian_samples_matches_the_closed_form_of_their_parameters():
    rng = np.random.default_rng(1)
    d, n = 3, 40_000
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.25])
    s1, s2 = random_spd(rng, d, 0.5), random_spd(rng, d, 0.2)
    a = rng.multivariate_normal(mu1, s1, size=n)
    b = rng.multivariate_normal(mu2, s2, size=n)
    truth = closed_form(mu1, s1, mu2, s2)
    # sampling error at this N is ~0.5%; a missing factor or a wrong trace term is off by > 20%
    assert fid(a, b) == pytest.approx(truth, rel=0.03)


def test_singular_covariances_give_finite_exact_values():
    mu1, mu2 = np.zeros(4), np.ones(4)
    a, b = np.array([2.0, 0.0, 1.0, 0.0]), np.array([0.5, 3.0, 0.0, 0.0])  # diagonals with zeros
    expected = 4.0 + a.sum() + b.sum() - 2 * np.sqrt(a * b).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    assert frechet_distance(mu1, np.zeros((4, 4)), mu2, np.zeros((4, 4))) == pytest.approx(4.0)
    # rank-deficient sample covariances (N < D), allowed explicitly
    x, y = torch.randn(10, 32), torch.randn(12, 32)
    with pytest.warns(UserWarning, match="rank-deficient"):
        value = fid(x, y, allow_small=True)
    assert np.isfinite(value) and value > 0


def test_fid_refuses_fewer_samples_than_dimensions_by_default():
    with pytest.raises(SampleSizeError, match="allow_small"):
        fid(torch.randn(10, 32), torch.randn(50, 32))
    with pytest.raises(SampleSizeError):
        fid(torch.randn(1, 2), torch.randn(50, 2))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="NaN"):
        fid(torch.tensor([[0.0, float("nan")], [1.0, 2.0], [3.0, 1.0]]), torch.randn(3, 2))
    with pytest.raises(ValueError, match="dimension"):
        fid(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="symmetric"):
        frechet_distance(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(2), np.eye(2))


class ProjectionFeatures(torch.nn.Module):
    """A fixed random projection of flattened images [N, 3, 4, 4] → float64 features [N, 16]."""

    num_features = 16

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.register_buffer("w", torch.randn(48, 16, generator=g, dtype=torch.float64))

    def forward(self, x):
        return x.flatten(1).double() @ self.w


def test_fid_equals_torchmetrics_with_the_same_feature_module():
    tm_fid = pytest.importorskip("torchmetrics.image.fid")
    features = ProjectionFeatures()
    metric = tm_fid.FrechetInceptionDistance(feature=features)
    g = torch.Generator().manual_seed(0)
    real = torch.rand(300, 3, 4, 4, generator=g, dtype=torch.float64)
    fake = torch.rand(280, 3, 4, 4, generator=g, dtype=torch.float64) ** 1.5
    metric.update(real[:100], real=True)
    metric.update(real[100:], real=True)
    metric.update(fake, real=False)
    ours = fid(features(real), features(fake))
    assert ours > 1.0  # the two sets really differ
    assert ours == pytest.approx(float(metric.compute()), rel=1e-5)


def test_stats_roundtrip_without_pickle(tmp_path):
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(5), random_spd(rng, 5)
    path = tmp_path / "ref.npz"
    save_stats(path, torch.from_numpy(mu), sigma, {"n": 50000, "extractor": "inception-v3-fid"})
    stats = load_stats(path)
    np.testing.assert_array_equal(stats.mu, mu)
    np.testing.assert_array_equal(stats.sigma, sigma)
    assert stats.meta == {"n": 50000, "extractor": "inception-v3-fid", "format": STATS_FORMAT}
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["meta", "mu", "sigma"]
    assert frechet_distance(stats.mu, stats.sigma, mu, sigma) == 0.0


def test_load_stats_rejects_foreign_files(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(ValueError, match="missing"):
        load_stats(path)
    with pytest.raises(TypeError, match="JSON"):
        save_stats(tmp_path / "x.npz", np.zeros(2), np.eye(2), {"bad": object()})
    with pytest.raises(ValueError, match="sigma"):
        save_stats(tmp_path / "x.npz", np.zeros(2), np.eye(3))
