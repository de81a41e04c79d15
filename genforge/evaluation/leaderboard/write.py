"""``genforge compare``: build the leaderboard of some runs and write its files."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from genforge.evaluation.leaderboard.board import Leaderboard, build_leaderboard, default_out
from genforge.evaluation.leaderboard.html import render_html
from genforge.evaluation.leaderboard.markdown import ASSETS_DIR, render_markdown
from genforge.evaluation.leaderboard.plots import make_figures
from genforge.evaluation.protocol import EvalError
from genforge.io import atomic_write_text, claim_new, pid_alive, publish
from genforge.rundir import check_location, check_output

__all__ = ["MD_NAME", "HTML_NAME", "CompareOutcome", "compare_runs"]

MD_NAME = "leaderboard.md"
HTML_NAME = "leaderboard.html"
STAGE = "leaderboard"  # staging folders: .leaderboard.PID_….tmp
COMPLETE = "COMPLETE"  # in a staging folder: every file is written; what remains is renaming


@dataclass
class CompareOutcome:
    md_path: Path
    html_path: Path
    leaderboard: Leaderboard


def compare_runs(run_dirs: Sequence[str | Path], *, out: str | Path | None = None,
                 overwrite: bool = False) -> CompareOutcome:
    """Write ``leaderboard.md``, ``leaderboard.html`` and ``leaderboard_files/*.png`` into ``out``.

    Everything is written into a staging folder in ``out`` first (``.leaderboard.PID_….tmp``), marked complete,
    then renamed into place (html, figures, markdown); a compare killed during the renames is completed by the
    next one (:func:`finish_interrupted`), and one killed earlier leaves the previous files untouched.

    Args:
        run_dirs: run directories (or ``genforge eval --samples`` output folders); at least one.
        out: destination folder (created); default :func:`default_out`. An empty name, the root, a system
            folder and a folder inside a run are refused.
        overwrite: replace leaderboard files that exist there (otherwise refused before any work).

    Returns:
        The paths written and the :class:`Leaderboard` they show.
    """
    if not run_dirs:
        raise EvalError("compare needs at least one run directory")
    out_dir = Path(out) if out is not None else default_out(run_dirs)
    check_location(out if out is not None else out_dir, command="compare", what="leaderboard folder", folder=True,
                   chosen=out is None)
    if out_dir.exists() and not out_dir.is_dir():
        raise EvalError(f"--out {out_dir} is a file; compare writes a folder (leaderboard.md, leaderboard.html)")
    finish_interrupted(out_dir)
    for name in (MD_NAME, HTML_NAME):
        check_output(out_dir / name, overwrite=overwrite, what="leaderboard file", command="compare",
                     chosen=out is None)
    board = build_leaderboard(run_dirs)
    figs = make_figures(board.entries)
    md = render_markdown(board, figs, out_dir)
    page = render_html(board, figs)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{STAGE}.{os.getpid()}_", suffix=".tmp", dir=out_dir))
    try:
        if figs:
            (staging / ASSETS_DIR).mkdir()
            for name, _, png in figs:
                (staging / ASSETS_DIR / name).write_bytes(png)
        (staging / HTML_NAME).write_text(page, encoding="utf-8")
        (staging / MD_NAME).write_text(md, encoding="utf-8")
        atomic_write_text(staging / COMPLETE, "")  # from here on the next compare completes the renames
        _move_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for name in (MD_NAME, HTML_NAME):
            claim_new(out_dir / name, False)  # a compare stopped at the html by another's leaves no claim
    return CompareOutcome(out_dir / MD_NAME, out_dir / HTML_NAME, board)


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename a complete staging folder's files onto their final names: html, then figures, then markdown. The
    html goes first: a compare without --overwrite that finds another's leaderboard there now stops at it
    (``genforge.io.publish``), having moved nothing."""
    if (staging / HTML_NAME).is_file():
        publish(staging / HTML_NAME, out_dir / HTML_NAME)
    assets = staging / ASSETS_DIR
    if assets.is_dir():
        (out_dir / ASSETS_DIR).mkdir(exist_ok=True)
        for f in sorted(assets.iterdir()):
            os.replace(f, out_dir / ASSETS_DIR / f.name)
    if (staging / MD_NAME).is_file():
        publish(staging / MD_NAME, out_dir / MD_NAME)


def finish_interrupted(out_dir: Path) -> list[Path]:
    """Leftovers of compares killed in ``out_dir``: a complete staging folder is renamed into place (the kill
    came during the renames), an incomplete one is removed; each is named on stderr. Returns them."""
    done = []
    if not out_dir.is_dir():
        return done
    for staging in sorted(out_dir.glob(f".{STAGE}.*_*.tmp")):
        pid = staging.name.split(".")[-2].split("_")[0]
        if not staging.is_dir() or staging.is_symlink() or not pid.isdigit() or pid_alive(int(pid)):
            continue
        if (staging / COMPLETE).is_file():
            _move_into_place(staging, out_dir)
            print(f"completed the leaderboard of an interrupted compare (process {pid}) in {out_dir}",
                  file=sys.stderr)
        else:
            print(f"removed {staging}: left by an interrupted compare (process {pid})", file=sys.stderr)
        shutil.rmtree(staging, ignore_errors=True)
        done.append(staging)
    return done
