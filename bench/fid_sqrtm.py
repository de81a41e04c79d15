"""FID's matrix square root: our eigenvalue route vs ``scipy.linalg.sqrtm`` (pytorch-fid's), at D = 2048.

Two random well-conditioned covariances (A A^T / 2D + 0.1 I with A [D, 2D]
standard normal; eigenvalues roughly in [0.1, 3]) and random means. Prints the
median wall time of each route over repeats, their ratio, and the absolute
difference of the two FID values. Each route repeats until ``--repeats`` runs
or ``--budget`` seconds, whichever comes first (at least one run), so the whole
script stays around a minute on 2 cores.

    python bench/fid_sqrtm.py [--dim 2048] [--repeats 3] [--budget 25]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import require_idle, summary  # noqa: E402

from genforge.metrics.fid import frechet_distance  # noqa: E402


def sqrtm_fid(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """pytorch-fid's ``calculate_frechet_distance`` without its eps retry (not needed: inputs are well-conditioned)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def timed(fn, args: tuple, repeats: int, budget: float) -> tuple[list[float], float]:
    """Wall times in ms of up to ``repeats`` calls (stopping after ``budget`` s), and the last result."""
    times, start = [], time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - start < budget):
        t0 = time.perf_counter()
        value = fn(*args)
        times.append(1e3 * (time.perf_counter() - t0))
    return times, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=2048, help="feature dimension D")
    ap.add_argument("--repeats", type=int, default=3, help="runs per route (median reported)")
    ap.add_argument("--budget", type=float, default=25.0, help="seconds after which a route stops repeating")
    args = ap.parse_args()
    require_idle()
    rng = np.random.default_rng(0)
    d = args.dim
    stats = []
    for _ in range(2):
        a = rng.standard_normal((d, 2 * d))
        stats += [rng.standard_normal(d), a @ a.T / (2 * d) + 0.1 * np.eye(d)]  # mu [D], sigma [D, D]
    print(f"D={d}, numpy {np.__version__}, scipy {scipy.__version__}", flush=True)
    eig_ms, eig_value = timed(frechet_distance, tuple(stats), args.repeats, args.budget)
    print(f"eigen route : {summary(eig_ms)} ms   FID {eig_value:.10f}", flush=True)
    sqrtm_ms, sqrtm_value = timed(sqrtm_fid, tuple(stats), args.repeats, args.budget)
    print(f"scipy sqrtm : {summary(sqrtm_ms)} ms   FID {sqrtm_value:.10f}", flush=True)
    print(
        f"speed-up {statistics.median(sqrtm_ms) / statistics.median(eig_ms):.1f}x, "
        f"|FID difference| {abs(eig_value - sqrtm_value):.3e} (relative {abs(eig_value / sqrtm_value - 1):.1e})"
    )


if __name__ == "__main__":
    main()
