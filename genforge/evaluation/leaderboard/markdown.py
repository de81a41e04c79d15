"""``leaderboard.md``: the tables of :mod:`~genforge.evaluation.leaderboard.cells` as Markdown.

Sample grids are linked relative to the board; plots are linked from :data:`ASSETS_DIR`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote
from typing import Any

from genforge.evaluation.leaderboard.board import Leaderboard
from genforge.evaluation.leaderboard.cells import (EARLIER_MARK, EARLIER_NOTE, MISSING_EVAL, PROTOCOL_COLUMNS, CellView,
                                                   EvalStatus, excerpt, metric_table, protocol_rows, run_rows,
                                                   shared_protocol, warned_runs)
from genforge.evaluation.leaderboard.plots import Figure

__all__ = ["ASSETS_DIR", "render_markdown"]

ASSETS_DIR = "leaderboard_files"


_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}
_MARKDOWN = re.compile(r"([\\`*_\[\]#!|~])")


def _md(s: Any) -> str:
    """``s`` (taken from a run, config or eval file) as literal text anywhere in Markdown: HTML's ``&<>"``
    as entities, every Markdown-significant character backslash-escaped, on one line."""
    text = "".join(_HTML.get(ch, ch) for ch in " ".join(str(s).splitlines()))
    return _MARKDOWN.sub(r"\\\1", text)


def _code(s: Any) -> str:
    """``s`` as an inline code span: fenced by more backticks than it holds, ``|`` escaped for tables."""
    text = " ".join(str(s).splitlines()).replace("|", "\\|")
    fence = "`" * (max((len(r) for r in re.findall("`+", text)), default=0) + 1)
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _cell(c: CellView) -> str:
    """A metric cell's Markdown: bold when best, ``(#rank)``, ``†n`` when flagged, ``ʰ`` when earlier."""
    if c.state == "na":
        return _md(c.value)
    if c.state == "flag":
        return f"{_md(c.value)} {_md(c.note)}"
    value = f"**{_md(c.value)}**" if c.state == "best" else _md(c.value)
    return value + (f" ({c.rank})" if c.rank else "") + (f" {EARLIER_MARK}" if c.earlier else "")  # ours: #n


def _table(board: Leaderboard, title: str) -> list[str]:
    """The lines of the metric table ``title`` and its footnotes."""
    view = metric_table(board, title)
    lines = ["| run | family | " + " | ".join(_md(h.label) + (f" {h.arrow}" if h.arrow else "") for h in view.headers)
             + " |", "|" + "---|" * (len(view.headers) + 2)]
    lines += [f"| {_md(r.name)} | {_md(r.family)} | " + " | ".join(_cell(c) for c in r.cells) + " |"
              for r in view.rows]
    if view.notes:
        lines += [""] + [f"†{i}: {_md(n)}" for i, n in enumerate(view.notes, 1)]
    if view.earlier:
        lines += ["", f"{EARLIER_MARK}: {EARLIER_NOTE}"]
    return lines


def _status(s: EvalStatus) -> str:
    """The evaluation column of the runs table."""
    if s.error:
        return f"⚠ {_md(s.error)}"
    if s.command:
        return f"{MISSING_EVAL} {_code(s.command)}"
    return f"{_md(s.created)} {_md(s.warnings)}" + (f" ⚠ {_md(s.stale)}" if s.stale else "")


def _runs(board: Leaderboard) -> list[str]:
    """The "Runs" section."""
    lines = ["## Runs", "", "| run | family | kind | step | evaluation | last training eval | path |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {_md(r.name)} | {_md(r.family)} | {_md(r.kind)} | {_md(r.step)} | {_status(r.status)} | "
              f"{_md(r.last_eval)} | {_code(r.path)} |" for r in run_rows(board)]
    return lines


def _samples(board: Leaderboard, out_dir: Path) -> list[str]:
    """The "Samples" section: image grids linked relative to ``out_dir``, text excerpts inline."""
    lines = ["## Samples", ""]
    for e in board.entries:
        if e.samples is not None and e.samples_kind == "image":
            rel = os.path.relpath(e.samples.resolve(), out_dir.resolve())
            lines += [f"### {_md(e.name)}", "", f"![{_md(e.name)} samples]({quote(Path(rel).as_posix())})", ""]
        elif e.samples is not None and e.samples_kind == "text":
            text = excerpt(e.samples)
            fence = "`" * max(3, max((len(r) for r in re.findall("`+", text)), default=0) + 1)
            lines += [f"### {_md(e.name)}", "", fence, text, fence, ""]
    return lines


def _protocols(board: Leaderboard) -> list[str]:
    """The "Protocols ranked under" section (empty without columns)."""
    if not board.columns:
        return []
    lines = ["", "## Protocols ranked under", ""]
    shared = shared_protocol(board)
    if shared is not None:
        lines += ["Shared by all: " + ", ".join(f"{_md(k)} {_code(v)}" for k, v in shared), ""]
    lines += ["| " + " | ".join(PROTOCOL_COLUMNS) + " |", "|" + "---|" * len(PROTOCOL_COLUMNS)]
    lines += ["| " + " | ".join(_md(row[k]) if k != "id" else _code(row[k]) for k in PROTOCOL_COLUMNS) + " |"
              for row in protocol_rows(board)]
    return lines


def _warnings(board: Leaderboard) -> list[str]:
    """The "Warnings from the evaluations" section (empty when none warned)."""
    warned = warned_runs(board)
    if not warned:
        return []
    return ["", "## Warnings from the evaluations", ""] + [
        f"- {_md(name)}: " + "; ".join(_md(w) for w in warnings) for name, warnings in warned]


def render_markdown(board: Leaderboard, figs: list[Figure], out_dir: Path) -> str:
    """The text of ``leaderboard.md`` written into ``out_dir`` (links are relative to it)."""
    lines = ["# genforge leaderboard", "", f"Generated {board.created}. Only results measured under the same "
             "protocol are ranked together (per metric); others are shown with † and the reason.", ""]
    lines += _runs(board)
    for title in board.tables:
        lines += ["", f"## {_md(title)}", ""] + _table(board, title)
    lines += [""] + _samples(board, out_dir)
    if figs:
        lines += ["## Curves", ""] + [f"![{_md(title)}]({ASSETS_DIR}/{quote(name)})" for name, title, _ in figs] + [""]
    lines += _protocols(board) + _warnings(board)
    return "\n".join(lines) + "\n"
