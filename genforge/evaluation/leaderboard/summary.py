"""The leaderboard as a short plain-text table for the terminal."""

from __future__ import annotations

from genforge.evaluation.leaderboard.board import Leaderboard
from genforge.evaluation.leaderboard.cells import MISSING_EVAL, CellView, metric_table, run_rows

__all__ = ["format_summary"]


def _cell(c: CellView) -> str:
    """A cell as plain text: the value, ``†`` when not ranked, ``#rank`` when ranked."""
    if c.state == "na":
        return c.value
    return c.value + (" †" if c.state == "flag" else "") + (f" {c.rank}" if c.rank else "")


def format_summary(board: Leaderboard) -> str:
    """A short plain-text table for the terminal: run, then each ranked metric's value and rank; then the runs
    without a readable evaluation and why."""
    lines = []
    for title in board.tables:
        view = metric_table(board, title)
        lines.append(f"{title}:")
        rows = [["run"] + [h.label for h in view.headers]] + [[r.name] + [_cell(c) for c in r.cells]
                                                              for r in view.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows] + [""]
    for r in run_rows(board):
        if r.status.error or r.status.command:
            last = f"{r.last_eval}; " if r.last_eval else ""
            lines.append(f"{r.name}: {last}" + (r.status.error or f"{MISSING_EVAL} `{r.status.command}`"))
    return "\n".join(lines).rstrip()
