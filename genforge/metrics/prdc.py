"""Improved precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020).

Definitions are exactly those of the ``prdc`` package (``prdc.compute_prdc``),
with r_k(x) the distance from x to its k-th nearest neighbour *within its own
set*, where the point itself counts as the nearest (distance 0), i.e. the
(k+1)-th smallest distance of its row:

    precision = mean_fake  [ exists real r: d(r, f) < r_k(r) ]
    recall    = mean_real  [ exists fake f: d(r, f) < r_k(f) ]
    density   = mean_fake  #{real r: d(r, f) < r_k(r)} / k
    coverage  = mean_real  [ min_f d(r, f) < r_k(r) ]

Distances are Euclidean, computed in float64 as |x|^2 + |y|^2 - 2 x.y (clamped
at 0, self-distance set to exactly 0, as scikit-learn does) and compared as
squares. Memory is bounded: the three distance matrices (real-real, fake-fake,
real-fake) are never held whole, only blocks of about ``BLOCK_BYTES``; one
pass serves several k, so :func:`precision_recall_density_coverage` with
k = 3 for P/R and k = 5 for D/C costs the same as one :func:`prdc` call.
Cost is about 2 (Nr^2 + Nf^2 + Nr Nf) D float64 operations: a few seconds for
10k vs 10k at D = 128 on two CPU cores, and about 16 times that at D = 2048.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from genforge.metrics.guards import SampleSizeError, as_features, check_pair

BLOCK_BYTES = 64 * 2**20  # float64 distance block held at a time (rows × columns × 8 bytes)


def _block_rows(n_cols: int) -> int:
    """Rows per block of a float64 matrix with ``n_cols`` columns that fit in BLOCK_BYTES."""
    return max(1, BLOCK_BYTES // (8 * n_cols))


def _augment(x: Tensor) -> tuple[Tensor, Tensor]:
    """Rows of x [N, D] → left [N, D+2] = [x, |x|^2, 1], right [N, D+2] = [-2x, 1, |x|^2].

    left_x @ right_y.T = |x|^2 + |y|^2 - 2 x.y = squared distances, in one matmul.
    """
    sq, one = (x * x).sum(dim=1, keepdim=True), torch.ones_like(x[:, :1])  # (N, 1) each
    return torch.cat([x, sq, one], dim=1), torch.cat([-2.0 * x, one, sq], dim=1)


def _sq_radii(x: Tensor, ks: list[int]) -> dict[int, Tensor]:
    """Squared distance from each row of x [N, D] to its k-th neighbour in x (itself = 0th) → {k: [N]}."""
    n = x.shape[0]
    left, right = _augment(x)  # (N, D+2) each
    nearest = torch.empty(n, max(ks) + 1, dtype=torch.float64)  # (N, kmax + 1), ascending
    step = _block_rows(n)
    for i in range(0, n, step):
        d2 = (left[i : i + step] @ right.T).clamp_(min=0.0)  # (B, N)
        rows = torch.arange(d2.shape[0])
        d2[rows, rows + i] = 0.0  # self-distance exactly 0 (rounding would leave ~1e-13)
        nearest[i : i + step] = d2.topk(max(ks) + 1, dim=1, largest=False, sorted=True).values
    return {k: nearest[:, k] for k in ks}


def _manifold_metrics(real: Any, fake: Any, ks: list[int]) -> dict[int, dict[str, float]]:
    """All four metrics for each k in ks, from one pass over the three distance matrices."""
    r, f = as_features(real, "real"), as_features(fake, "fake")  # (Nr, D), (Nf, D) float64
    check_pair(r, f, names=("real", "fake"))
    for k in ks:
        if k < 1:
            raise ValueError(f"nearest_k must be >= 1, got {k}")
        if min(r.shape[0], f.shape[0]) <= k:
            raise SampleSizeError(
                f"nearest_k={k} needs more than {k} samples per set, got {r.shape[0]} real and {f.shape[0]} fake"
            )
    rad_r, rad_f = _sq_radii(r, ks), _sq_radii(f, ks)  # {k: (Nr,)}, {k: (Nf,)}
    r_left, _ = _augment(r)
    _, f_right = _augment(f)
    in_balls = dict.fromkeys(ks, 0)  # (real, fake) pairs with the fake inside the real's ball
    precise = {k: torch.zeros(f.shape[0], dtype=torch.bool) for k in ks}  # fake j is in some real's ball
    covered = {k: torch.zeros(r.shape[0], dtype=torch.bool) for k in ks}  # real i's ball holds a fake
    recalled = {k: torch.zeros(r.shape[0], dtype=torch.bool) for k in ks}  # real i lies in a fake's ball
    step = _block_rows(f.shape[0])
    for i in range(0, r.shape[0], step):
        d2 = (r_left[i : i + step] @ f_right.T).clamp_(min=0.0)  # (B, Nf)
        for k in ks:
            in_real_ball = d2 < rad_r[k][i : i + step, None]  # (B, Nf)
            in_balls[k] += int(in_real_ball.count_nonzero())
            precise[k] |= in_real_ball.any(dim=0)
            covered[k][i : i + step] = in_real_ball.any(dim=1)
            recalled[k][i : i + step] = (d2 < rad_f[k][None, :]).any(dim=1)
    return {
        k: {
            "precision": float(precise[k].double().mean()),
            "recall": float(recalled[k].double().mean()),
            "density": in_balls[k] / (k * f.shape[0]),
            "coverage": float(covered[k].double().mean()),
        }
        for k in ks
    }


def prdc(real: Any, fake: Any, nearest_k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage with one k, as ``prdc.compute_prdc``.

    Args:
        real: reference features [Nr, D] (tensor or array).
        fake: generated features [Nf, D].
        nearest_k: neighbourhood size k; both sets need more than k rows.

    Returns:
        ``{"precision", "recall", "density", "coverage"}``; all in [0, 1] except density (>= 0, mean 1 when
        fake ~ real).
    """
    return _manifold_metrics(real, fake, [nearest_k])[nearest_k]


def precision_recall(real: Any, fake: Any, k: int = 3) -> dict[str, float]:
    """Improved precision and recall [Nr, D] vs [Nf, D] with k neighbours → ``{"precision", "recall"}``."""
    m = _manifold_metrics(real, fake, [k])[k]
    return {"precision": m["precision"], "recall": m["recall"]}


def density_coverage(real: Any, fake: Any, k: int = 5) -> dict[str, float]:
    """Density and coverage [Nr, D] vs [Nf, D] with k neighbours → ``{"density", "coverage"}``."""
    m = _manifold_metrics(real, fake, [k])[k]
    return {"density": m["density"], "coverage": m["coverage"]}


def precision_recall_density_coverage(real: Any, fake: Any, *, pr_k: int = 3, dc_k: int = 5) -> dict[str, float]:
    """P/R with ``pr_k`` and D/C with ``dc_k`` from a single pass → the four metrics plus the two k."""
    m = _manifold_metrics(real, fake, sorted({pr_k, dc_k}))
    return {
        "precision": m[pr_k]["precision"],
        "recall": m[pr_k]["recall"],
        "density": m[dc_k]["density"],
        "coverage": m[dc_k]["coverage"],
        "pr_k": pr_k,
        "dc_k": dc_k,
    }
