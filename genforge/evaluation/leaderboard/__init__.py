"""``genforge compare``: one leaderboard across runs and families, ranking only comparable numbers.

    >>> out = compare_runs(["runs/mnist-dcgan", "runs/mnist-vae"])   # writes runs/leaderboard.{md,html}

For every metric, the runs are split by protocol (see
:mod:`genforge.evaluation.protocol`). The *reference* protocol of a metric is
the one most runs have a result under (ties: the earliest run listed); each
run's result under that protocol is ranked (from its ``eval.json`` results or,
when it was measured again differently since, its history). A run whose result
was measured otherwise is shown unranked, flagged with the reason (e.g.
``n_generated: 2000 vs 10000``). Runs without ``eval.json`` are listed with the
command that makes one.

``leaderboard.html`` is self-contained: CSS inline, sample grids and plots
embedded as base64 PNG, no external URL, script or font. ``leaderboard.md``
links the sample grids and the plots written into ``leaderboard_files/``.
Curves come from each run's ``metrics.jsonl``: training losses per run, and
evaluation metrics logged during training (proxy FID, validation loss)
overlaid across runs.

Modules: ``board`` (reading the runs, the columns and ranks), ``cells`` (what
every table says, shared by the renderers), ``markdown`` and ``html`` (the
renderers), ``plots`` (the figures), ``write`` (:func:`compare_runs`),
``summary`` (the terminal table).
"""

from __future__ import annotations

from genforge.evaluation.leaderboard.board import Leaderboard, build_leaderboard, default_out
from genforge.evaluation.leaderboard.summary import format_summary
from genforge.evaluation.leaderboard.write import CompareOutcome, compare_runs

__all__ = ["CompareOutcome", "Leaderboard", "build_leaderboard", "compare_runs", "default_out", "format_summary"]
