"""``genforge compare``: build the leaderboard of some runs and write its files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from genforge.evaluation.leaderboard.board import Leaderboard, build_leaderboard, default_out
from genforge.evaluation.leaderboard.html import render_html
from genforge.evaluation.leaderboard.markdown import ASSETS_DIR, render_markdown
from genforge.evaluation.leaderboard.plots import make_figures
from genforge.evaluation.protocol import EvalError
from genforge.io import atomic_path, atomic_write_text
from genforge.rundir import check_output

__all__ = ["MD_NAME", "HTML_NAME", "CompareOutcome", "compare_runs"]

MD_NAME = "leaderboard.md"
HTML_NAME = "leaderboard.html"


@dataclass
class CompareOutcome:
    md_path: Path
    html_path: Path
    leaderboard: Leaderboard


def compare_runs(run_dirs: Sequence[str | Path], *, out: str | Path | None = None,
                 overwrite: bool = False) -> CompareOutcome:
    """Write ``leaderboard.md``, ``leaderboard.html`` and ``leaderboard_files/*.png`` into ``out``.

    Args:
        run_dirs: run directories (or ``genforge eval --samples`` output folders); at least one.
        out: destination folder (created); default :func:`default_out`.
        overwrite: replace leaderboard files that exist there (otherwise refused before any work).

    Returns:
        The paths written and the :class:`Leaderboard` they show.
    """
    if not run_dirs:
        raise EvalError("compare needs at least one run directory")
    out_dir = Path(out) if out is not None else default_out(run_dirs)
    if out_dir.exists() and not out_dir.is_dir():
        raise EvalError(f"--out {out_dir} is a file; compare writes a folder (leaderboard.md, leaderboard.html)")
    for name in (MD_NAME, HTML_NAME):
        check_output(out_dir / name, overwrite=overwrite, what="leaderboard file")
    board = build_leaderboard(run_dirs)
    figs = make_figures(board.entries)
    md = render_markdown(board, figs, out_dir)
    page = render_html(board, figs)
    out_dir.mkdir(parents=True, exist_ok=True)
    if figs:
        (out_dir / ASSETS_DIR).mkdir(exist_ok=True)
        for name, _, png in figs:
            with atomic_path(out_dir / ASSETS_DIR / name) as tmp:
                tmp.write_bytes(png)
    md_path, html_path = out_dir / MD_NAME, out_dir / HTML_NAME
    atomic_write_text(md_path, md)
    atomic_write_text(html_path, page)
    return CompareOutcome(md_path, html_path, board)
