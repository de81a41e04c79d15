"""Fréchet distance between Gaussians fitted to features (FID; Heusel et al. 2017).

    FID = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})

The trace of the matrix square root comes from eigenvalues, not from
``scipy.linalg.sqrtm`` (whose Schur iteration on the non-symmetric S1 S2 is
slow and can return complex or NaN results). With any factor F F^T = S1,

    tr((S1 S2)^{1/2}) = sum_i sqrt(lambda_i(F^T S2 F))

because S1 S2 = F (F^T S2) and (F^T S2) F share their spectrum, and F^T S2 F is
symmetric PSD, so ``eigvalsh`` applies. F is the Cholesky factor when S1 is
positive definite, and V diag(sqrt(w)) from ``eigh(S1)`` (eigenvalues clamped
at 0) when it is singular, so rank-deficient covariances need no epsilon.
Everything is float64.

Reference statistics are cached with :func:`save_stats` / :func:`load_stats`
as ``.npz`` files read with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge.io import atomic_path
from genforge.metrics.guards import as_features, as_matrix, check_pair, check_sample_sizes

STATS_FORMAT = "genforge-gaussian-stats/1"
EPS_RETRY = 1e-6  # added to both diagonals when the eigensolver fails (pytorch-fid's value)
NEG_EIG_TOL = 1e-5  # eigenvalues below -NEG_EIG_TOL * largest: not PSD (float32-stored stats stay well above)
NOISE_TOL = 1e-9  # an FID in [-NOISE_TOL * (tr S1 + tr S2), 0) is rounding noise and becomes 0
ROW_CHUNK = 4096  # rows per block when accumulating the covariance


def gaussian_stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of features, in float64.

    Args:
        features: tensor or array [N, D], N >= 2.

    Returns:
        mu: float64 [D]; sigma: float64 [D, D], normalised by N - 1.
    """
    x = as_matrix(features, "features")  # no float64 copy of all rows: converted chunk by chunk
    n, d = x.shape
    if n < 2:
        raise ValueError(f"features needs at least 2 samples for a covariance, got {n}")
    mu = torch.zeros(d, dtype=torch.float64)
    for i in range(0, n, ROW_CHUNK):
        mu += as_features(x[i : i + ROW_CHUNK], f"features[{i}:{i + ROW_CHUNK}]").sum(dim=0)
    mu /= n
    cov = torch.zeros(d, d, dtype=torch.float64)
    for i in range(0, n, ROW_CHUNK):  # two passes: centering first avoids sum(x x^T) - N mu mu^T cancellation
        xc = as_features(x[i : i + ROW_CHUNK], f"features[{i}:{i + ROW_CHUNK}]") - mu  # (chunk, D)
        cov += xc.T @ xc  # (D, D)
    cov /= n - 1
    return mu.numpy(), cov.numpy()


def _matrix(x: Any, name: str, ndim: int) -> np.ndarray:
    """x as a finite float64 numpy array with ``ndim`` dimensions, or a ValueError naming ``name``."""
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {list(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _symmetric(s: np.ndarray, name: str) -> np.ndarray:
    """(S + S^T) / 2 for a matrix symmetric up to rounding; a ValueError when it clearly is not."""
    scale = max(np.abs(s).max(), np.finfo(np.float64).tiny)
    if np.abs(s - s.T).max() > 1e-6 * scale:
        raise ValueError(f"{name} is not symmetric (max |S - S^T| = {np.abs(s - s.T).max():.3g})")
    return (s + s.T) / 2


def _clamped_eigvals(w: np.ndarray, name: str) -> np.ndarray:
    """Clamp rounding-level negative eigenvalues to 0; raise when the matrix is clearly not PSD."""
    top = max(w.max(), 0.0)
    if w.min() < -NEG_EIG_TOL * max(top, 1e-300):
        raise ValueError(f"{name} is not positive semi-definite: eigenvalue {w.min():.3g} vs largest {top:.3g}")
    return np.clip(w, 0.0, None)


def _sqrt_factor(s: np.ndarray, name: str) -> np.ndarray:
    """F [D, D] with F F^T = S: Cholesky when S is positive definite, else V diag(sqrt(w)) from eigh."""
    try:
        return np.linalg.cholesky(s)
    except np.linalg.LinAlgError:  # singular (e.g. N <= D): the eigen route handles rank deficiency
        w, v = np.linalg.eigh(s)  # S = V diag(w) V^T
        return v * np.sqrt(_clamped_eigvals(w, name))


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr((S1 S2)^{1/2}) for symmetric PSD S1, S2 [D, D].

    With F F^T = S1, S1 S2 = F (F^T S2) has the spectrum of (F^T S2) F = F^T S2 F,
    which is symmetric PSD, so its eigenvalues come from ``eigvalsh``.
    """
    f = _sqrt_factor(s1, "sigma1")  # (D, D)
    m = f.T @ s2 @ f  # (D, D)
    w = np.linalg.eigvalsh((m + m.T) / 2)  # (D,)
    return float(np.sqrt(_clamped_eigvals(w, "sigma2 (as F^T sigma2 F)")).sum())


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    Args:
        mu1, mu2: means [D] (tensor or array).
        sigma1, sigma2: symmetric PSD covariances [D, D].

    Returns:
        The distance (squared units of the features), >= 0 and never NaN. A result
        below zero by no more than ``NOISE_TOL * (tr S1 + tr S2)`` is rounding
        noise and is returned as 0; a larger negative raises ``FloatingPointError``.

    If the eigensolver fails, ``EPS_RETRY * I`` is added to both covariances and
    a ``RuntimeWarning`` is emitted (pytorch-fid's fallback); it is never added
    otherwise, so well-posed inputs get the exact formula.
    """
    mu1, mu2 = _matrix(mu1, "mu1", 1), _matrix(mu2, "mu2", 1)
    sigma1, sigma2 = (
        _symmetric(_matrix(sigma1, "sigma1", 2), "sigma1"),
        _symmetric(_matrix(sigma2, "sigma2", 2), "sigma2"),
    )
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"shape mismatch: mu1 {list(mu1.shape)}, sigma1 {list(sigma1.shape)}, "
            f"mu2 {list(mu2.shape)}, sigma2 {list(sigma2.shape)}"
        )
    try:
        tr_sqrt = _trace_sqrt_product(sigma1, sigma2)
    except np.linalg.LinAlgError:
        warnings.warn(
            f"eigendecomposition failed; adding {EPS_RETRY:g} * I to both covariances", RuntimeWarning, stacklevel=2
        )
        eye = EPS_RETRY * np.eye(d)
        sigma1, sigma2 = sigma1 + eye, sigma2 + eye
        tr_sqrt = _trace_sqrt_product(sigma1, sigma2)
    traces = float(np.trace(sigma1) + np.trace(sigma2))
    value = float(((mu1 - mu2) ** 2).sum()) + traces - 2.0 * tr_sqrt
    if not np.isfinite(value):
        raise FloatingPointError(f"FID is not finite ({value}); the statistics overflow float64")
    if value < 0:
        if value < -NOISE_TOL * max(traces, 1e-300):
            raise FloatingPointError(f"FID came out negative ({value:.6g}) beyond rounding noise; check the inputs")
        value = 0.0
    return value


def fid(features_a: Any, features_b: Any, *, allow_small: bool = False) -> float:
    """FID between two feature sets [Na, D] and [Nb, D] (e.g. Inception pool3, D = 2048).

    Refuses N < D in either set unless ``allow_small`` (then warns; see ``guards``).
    The value is biased by N: compare only runs with the same N.
    """
    a, b = as_matrix(features_a, "features_a"), as_matrix(features_b, "features_b")
    check_pair(a, b)
    check_sample_sizes(a.shape[0], b.shape[0], a.shape[1], kid_subset_size=None, allow_small=allow_small)
    if min(a.shape[0], b.shape[0]) < a.shape[1]:  # allowed explicitly, but say so
        warnings.warn(
            f"FID on {a.shape[0]} and {b.shape[0]} samples of dimension {a.shape[1]}: rank-deficient covariances, "
            "not comparable to FIDs computed with N >= D",
            UserWarning,
            stacklevel=2,
        )
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


@dataclass
class GaussianStats:
    """Cached reference statistics: mu float64 [D], sigma float64 [D, D], and JSON-able meta."""

    mu: np.ndarray
    sigma: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def save_stats(path: str | Path, mu: Any, sigma: Any, meta: dict[str, Any] | None = None) -> None:
    """Write ``mu`` [D], ``sigma`` [D, D] (as float64) and ``meta`` (stored as JSON) to an ``.npz``, atomically.

    Put what makes the statistics comparable in ``meta``: feature extractor and its
    weights' hash, number of samples, data set and split, image resizing.
    """
    mu, sigma = _matrix(mu, "mu", 1), _matrix(sigma, "sigma", 2)
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"sigma must be [{mu.shape[0]}, {mu.shape[0]}] to match mu, got {list(sigma.shape)}")
    try:
        meta_json = json.dumps({"format": STATS_FORMAT, **(meta or {})}, sort_keys=True)
    except TypeError as e:
        raise TypeError(f"meta must be JSON-serialisable: {e}") from None
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, mu=mu, sigma=sigma, meta=np.array(meta_json))


def load_stats(path: str | Path) -> GaussianStats:
    """Read statistics written by :func:`save_stats` (no pickle); raise on a wrong format or shape."""
    with np.load(path, allow_pickle=False) as z:
        missing = {"mu", "sigma", "meta"} - set(z.files)
        if missing:
            raise ValueError(f"{path} is not a genforge stats file: missing {sorted(missing)}")
        mu, sigma, meta = z["mu"].astype(np.float64), z["sigma"].astype(np.float64), json.loads(str(z["meta"]))
    if meta.get("format") != STATS_FORMAT:
        raise ValueError(f"{path}: unknown stats format {meta.get('format')!r}, expected {STATS_FORMAT!r}")
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{path}: mu {list(mu.shape)} and sigma {list(sigma.shape)} do not match")
    return GaussianStats(mu=mu, sigma=sigma, meta=meta)
