"""Kernel Inception Distance (Binkowski et al. 2018), as computed by torch-fidelity.

For ``subsets`` random pairs of subsets (m = ``subset_size`` rows from each set,
drawn without replacement, independently per subset), the unbiased MMD^2 with
the cubic polynomial kernel

    k(x, y) = (x . y / D + 1)^3

    MMD^2_u = sum_{i != j} k(a_i, a_j) / (m (m - 1))
            + sum_{i != j} k(b_i, b_j) / (m (m - 1))
            - 2 sum_{i, j} k(a_i, b_j) / m^2

is averaged; the spread is the population standard deviation over subsets
(``np.std``, as torch-fidelity reports it). Subsets are drawn with a private
``torch.Generator`` seeded by ``seed``; the global RNG is never touched.

Policy: a ``subset_size`` larger than either set raises ``SampleSizeError``
naming the numbers; it is never shrunk silently (pass a smaller one yourself
and report it). Kernels are computed in float64: at the defaults and D = 2048
that is about 1.2e12 floating-point operations (tens of seconds on 2 CPU cores).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from genforge.metrics.guards import SampleSizeError, as_features, as_matrix, check_pair


def polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """k(x, y) = (x . y / D + 1)^3 for x [m, D], y [n, D] → [m, n]."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(a: Tensor, b: Tensor) -> float:
    """Unbiased MMD^2 between a [m, D] and b [m, D] (equal sizes) under :func:`polynomial_kernel`."""
    m = a.shape[0]
    k_aa, k_bb, k_ab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)  # (m, m) each
    within = (k_aa.sum() - k_aa.diagonal().sum() + k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
    return float(within - 2.0 * k_ab.sum() / (m * m))


def kid(
    features_a: Any, features_b: Any, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID between feature sets [Na, D] and [Nb, D].

    Args:
        features_a, features_b: tensors or arrays of features (e.g. Inception pool3).
        subsets: number of subset pairs averaged.
        subset_size: rows per subset, at most min(Na, Nb).
        seed: seeds the private generator that draws the subsets.

    Returns:
        (mean, std) of MMD^2 over subsets, in squared kernel units (often reported × 1000).
    """
    a, b = as_matrix(features_a, "features_a"), as_matrix(features_b, "features_b")
    check_pair(a, b)
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    if subset_size < 2:
        raise ValueError(f"subset_size must be >= 2 for the unbiased estimate, got {subset_size}")
    if subset_size > min(a.shape[0], b.shape[0]):
        raise SampleSizeError(
            f"subset_size={subset_size} exceeds the sets' sizes ({a.shape[0]} and {b.shape[0]}); "
            f"pass subset_size <= {min(a.shape[0], b.shape[0])} and report it"
        )
    g = torch.Generator().manual_seed(seed)
    mmds = torch.empty(subsets, dtype=torch.float64)
    for s in range(subsets):
        ia = torch.randperm(a.shape[0], generator=g)[:subset_size]  # (m,)
        ib = torch.randperm(b.shape[0], generator=g)[:subset_size]  # (m,)
        # gather first, then cast: only 2 m rows are ever held in float64
        mmds[s] = mmd2_unbiased(as_features(a[ia], "features_a"), as_features(b[ib], "features_b"))
    return float(mmds.mean()), float(mmds.std(correction=0))
