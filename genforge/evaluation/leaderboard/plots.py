"""The leaderboard's figures (matplotlib, Agg): training losses per run and evaluation curves across runs.

Curves come from each run's metric log: training records give one panel per
run (its losses), evaluation records (proxy FID, validation loss) one panel per
metric with every run overlaid.
"""

from __future__ import annotations

import io
import math
from typing import Any

from genforge.evaluation.leaderboard.board import RunEntry
from genforge.rundir import METRICS_LOG

__all__ = ["Figure", "make_figures"]

Figure = tuple[str, str, bytes]  # (file name, title, PNG bytes)
Points = list[tuple[float, float]]
LEGEND_INSIDE = 5  # up to this many lines a panel carries its own legend
NOT_CURVES = {"step", "time", "lr", "steps_per_s", "images_per_s", "tokens_per_s", "elapsed_s", "eval_s"}


def _curves(entries: list[RunEntry]) -> tuple[dict[str, dict[str, Points]], dict[str, dict[str, Points]]]:
    """(run → loss key → points) for training records, and (eval key → run → points) for evaluation records."""
    train: dict[str, dict[str, Points]] = {}
    evals: dict[str, dict[str, Points]] = {}
    for e in entries:
        for rec in e.log:
            is_eval = "eval_s" in rec
            tag = rec.get("eval/fid_extractor") if is_eval else None  # proxy FIDs of different features differ
            for k, v in rec.items():
                if k in NOT_CURVES or k.startswith("grad_norm/") or k.endswith("/tokens"):
                    continue
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                    continue
                if is_eval:
                    key = f"{k}\n{tag}" if isinstance(tag, str) and k.startswith("eval/fid") else k
                    evals.setdefault(key, {}).setdefault(e.name, []).append((rec["step"], v))
                else:
                    train.setdefault(e.name, {}).setdefault(k, []).append((rec["step"], v))
    return train, evals


def _png(fig: Any) -> bytes:
    """The figure as PNG bytes (100 dpi, tight)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _log_scale(lines: list[tuple[str, Points]]) -> bool:
    """Whether a panel reads better on a log axis: every value positive and spanning more than 20x."""
    ys = [y for _, pts in lines for _, y in pts]
    return bool(ys) and min(ys) > 0 and max(ys) > 20 * min(ys)


def _grid(plt: Any, panels: dict[str, list[tuple[str, Points]]], title: str, style: dict[str, Any]) -> bytes:
    """PNG of a grid (at most 3 wide) with one panel per key of ``panels``, each plotting its (label, points)
    lines drawn with ``style``. A label keeps its colour in every panel; with more than ``LEGEND_INSIDE``
    labels there is one legend beside the grid instead of one per panel."""
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    labels = list(dict.fromkeys(label for lines in panels.values() for label, _ in lines))
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    colour = {label: cmap(i % cmap.N) for i, label in enumerate(labels)}
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, lines) in zip(axes.flat, panels.items()):
        for label, pts in lines:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, **style, label=label, linewidth=1.4, color=colour[label])
        if _log_scale(lines):
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(labels) <= LEGEND_INSIDE:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    if len(labels) > LEGEND_INSIDE:
        handles = [plt.Line2D([], [], color=colour[label], **style, label=label) for label in labels]
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    png = _png(fig)
    plt.close(fig)
    return png


def make_figures(entries: list[RunEntry]) -> list[Figure]:
    """(file name, title, PNG bytes) for the training-loss and evaluation-curve figures (none without curves)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    train, evals = _curves(entries)
    figs: list[Figure] = []
    if train:
        panels = {name: sorted(train[name].items()) for name in train}
        figs.append(("losses.png", "Training losses", _grid(plt, panels, f"training losses ({METRICS_LOG})", {})))
    if evals:
        panels = {k: [(name, sorted(pts)) for name, pts in evals[k].items()] for k in sorted(evals)}
        figs.append(("eval-curves.png", "Evaluation during training",
                     _grid(plt, panels, "evaluation during training", {"marker": "o", "markersize": 3})))
    return figs
