"""``genforge compare``: one leaderboard across runs and families (see :mod:`genforge.evaluation.leaderboard`).

    >>> out = compare_runs(["runs/mnist-dcgan", "runs/mnist-vae"])   # writes runs/leaderboard.{md,html}
"""

from __future__ import annotations

from genforge.evaluation.leaderboard import (CompareOutcome, Leaderboard, build_leaderboard, compare_runs,
                                             default_out, format_summary)

__all__ = ["CompareOutcome", "Leaderboard", "build_leaderboard", "compare_runs", "default_out", "format_summary"]
