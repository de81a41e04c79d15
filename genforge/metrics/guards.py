"""Input checks shared by the metrics, and the sample-size policy for FID / KID / PRDC.

Policy (a researcher should be told, not silently given a worse number):

- N < 2 in either set is always refused (no covariance, no nearest neighbour).
- FID with N < feature dimension D in either set is refused unless
  ``allow_small=True``: the sample covariance then has rank < D, and FID is
  dominated by the missing directions. With ``allow_small=True`` it runs and a
  warning says so.
- A KID subset larger than the smaller set is refused (``kid`` raises too; it
  never shrinks the subset behind your back).
- FID is biased upward by small N (Binkowski et al. 2018; Chong & Forsyth
  2020): only results computed with the same N are comparable. The returned
  warnings always say this, and warn harder when the two sets differ in size or
  N < 10,000 (the usual protocol is 50,000 generated vs the full train set).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

FID_RECOMMENDED_N = 10_000  # below this, FID's small-sample bias is typically > 1 point on Inception features


class SampleSizeError(ValueError):
    """A metric was asked for on too few samples to mean anything."""


def as_matrix(x: Any, name: str) -> Tensor:
    """``x`` as a tensor [N, D] without copying or casting; raise unless it is 2-D and real.

    Args:
        x: torch tensor or numpy array (or nested lists) [N, D].
        name: what ``x`` is, for error messages (e.g. ``"features_a"``).
    """
    t = x if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x))
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, D] of features, got shape {list(t.shape)}")
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got {t.dtype}")
    return t


def as_features(x: Any, name: str, dtype: torch.dtype = torch.float64) -> Tensor:
    """Features as a CPU tensor [N, D] of ``dtype``; raise on a bad shape or on NaN / inf values."""
    t = as_matrix(x, name).detach().to(device="cpu", dtype=dtype)
    bad = (~torch.isfinite(t)).any(dim=1)  # (N,)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} of {t.shape[0]} rows with NaN or inf values")
    return t


def check_pair(a: Tensor, b: Tensor, names: tuple[str, str] = ("features_a", "features_b"), min_n: int = 2) -> None:
    """Raise unless ``a`` [Na, D] and ``b`` [Nb, D] share D and both have at least ``min_n`` rows."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names[0]} has dimension {a.shape[1]} but {names[1]} has {b.shape[1]}")
    for t, name in zip((a, b), names):
        if t.shape[0] < min_n:
            raise SampleSizeError(f"{name} has {t.shape[0]} samples; at least {min_n} are needed")


def check_sample_sizes(
    n_generated: int,
    n_reference: int,
    feature_dim: int,
    *,
    kid_subset_size: int | None = 1000,
    allow_small: bool = False,
) -> list[str]:
    """Apply the policy above before an evaluation; return warnings to print or record.

    Args:
        n_generated: number of generated samples.
        n_reference: number of reference (real) samples.
        feature_dim: dimension D of the features FID is computed on (2048 for Inception pool3).
        kid_subset_size: the KID subset size that will be used; ``None`` when KID is not computed.
        allow_small: run FID with N < D anyway (warned) instead of raising.

    Returns:
        Human-readable warnings, always including the equal-N reminder.

    Raises:
        SampleSizeError: N < 2, N < D without ``allow_small``, or a KID subset larger than N.
    """
    for n, name, least in (
        (n_generated, "n_generated", 2),
        (n_reference, "n_reference", 2),
        (feature_dim, "feature_dim", 1),
    ):
        if n < least:
            raise SampleSizeError(f"{name}={n} is too small (need >= {least})")
    n_min = min(n_generated, n_reference)
    warnings = [
        (
            f"FID/KID are biased by sample size: compare only results with the same N "
            f"(this run: {n_generated} generated vs {n_reference} reference)"
        )
    ]
    if n_min < feature_dim:
        msg = (
            f"FID needs N >= feature dimension: got {n_generated} generated and {n_reference} reference samples "
            f"for D={feature_dim}; the covariance is rank-deficient"
        )
        if not allow_small:
            raise SampleSizeError(msg + " (pass allow_small=True to compute it anyway)")
        warnings.append("WARNING: " + msg + "; the FID value is not comparable to published numbers")
    if n_generated != n_reference:
        warnings.append(f"generated and reference sets differ in size ({n_generated} vs {n_reference})")
    if n_min < FID_RECOMMENDED_N:
        warnings.append(f"N={n_min} < {FID_RECOMMENDED_N}: FID is noticeably biased upward; report N with the number")
    if kid_subset_size is not None:
        if kid_subset_size < 2:
            raise SampleSizeError(f"kid_subset_size={kid_subset_size} must be >= 2")
        if kid_subset_size > n_min:
            raise SampleSizeError(
                f"kid_subset_size={kid_subset_size} exceeds the smaller set "
                f"({n_generated} generated, {n_reference} reference); lower it explicitly"
            )
    return warnings
