"""``leaderboard.html``: the tables of :mod:`~genforge.evaluation.leaderboard.cells` as one self-contained page.

CSS inline, sample grids and plots embedded as base64 PNG; no external URL, script or font.
"""

from __future__ import annotations

import base64
import html
from typing import Any

from genforge.evaluation.leaderboard.board import Leaderboard
from genforge.evaluation.leaderboard.cells import (EARLIER_MARK, EARLIER_NOTE, MISSING_EVAL, NO_SAMPLES,
                                                   PROTOCOL_COLUMNS, CellView, EvalStatus, excerpt, metric_table,
                                                   protocol_rows, run_rows, shared_protocol, warned_runs)
from genforge.evaluation.leaderboard.plots import Figure

__all__ = ["CSS", "render_html"]

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1320px;padding:0 16px;color:#1f2328;background:#fff;line-height:1.45}
h1{font-size:26px;margin:0 0 4px} h2{font-size:19px;margin:28px 0 10px;border-bottom:1px solid #d0d7de;
padding-bottom:4px} .sub{color:#57606a;font-size:13px}
table{border-collapse:collapse;font-size:13.5px;margin:6px 0 4px;min-width:40%}
th,td{border:1px solid #d0d7de;padding:5px 9px;text-align:right;white-space:nowrap}
th{background:#f6f8fa;font-weight:600} td.l,th.l{text-align:left}
tr:nth-child(even) td{background:#fbfcfd}
td.best{background:#dafbe1 !important;font-weight:700}
td.flag{color:#6e5600;background:#fff8c5 !important} td.na{color:#8c959f;text-align:center}
.scroll{overflow-x:auto;max-width:100%} table.proto td{white-space:normal;font-size:12.5px;max-width:420px}
.rank{color:#57606a;font-size:11px;margin-left:4px} .dir{color:#57606a;font-weight:400;font-size:11px}
.fn{font-size:12.5px;color:#57606a;margin:4px 0} code{background:#f6f8fa;padding:1px 4px;border-radius:4px;
font-size:12px} .warn{color:#9a6700} .err{color:#cf222e}
.grid{display:flex;flex-wrap:wrap;gap:16px}
.card{border:1px solid #d0d7de;border-radius:8px;padding:10px;background:#fff;flex:1 1 300px;max-width:420px}
.card h3{font-size:14px;margin:0 0 8px}
.card img{width:100%;image-rendering:pixelated;border-radius:4px;background:#000}
.card pre{white-space:pre-wrap;font-size:12px;max-height:320px;overflow:auto;background:#f6f8fa;padding:8px;
border-radius:4px;margin:0}
img.plot{max-width:100%;border:1px solid #d0d7de;border-radius:6px;margin:6px 0}
ul{margin:4px 0;padding-left:22px} li{margin:2px 0;font-size:13px}
"""


def _e(s: Any) -> str:
    """``s`` escaped for HTML text and attribute values."""
    return html.escape(str(s), quote=True)


def _data_uri(data: bytes) -> str:
    """PNG bytes as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _cell(c: CellView) -> str:
    """A metric cell's ``<td>``: class ``na`` / ``flag`` / ``best``, the reason or the rank as markup."""
    if c.state == "na":
        return f'<td class="na" title="not measured for this run">{_e(c.value)}</td>'
    if c.state == "flag":
        return f'<td class="flag" title="{_e(c.flag)}">{_e(c.value)} {c.note}</td>'
    rank = f'<span class="rank">{c.rank}</span>' if c.rank else ""
    if c.earlier:
        rank += f'<span class="rank" title="from an earlier evaluation ({_e(c.earlier)})">{EARLIER_MARK}</span>'
    return f'<td class="{c.state}">{_e(c.value)}{rank}</td>'


def _table(board: Leaderboard, title: str) -> str:
    """The metric table ``title`` and its footnotes."""
    view = metric_table(board, title)
    head = "".join(f'<th title="{h.hint}">{_e(h.label)} <span class="dir">{h.arrow}</span></th>'
                   for h in view.headers)
    out = [f'<div class="scroll"><table><tr><th class="l">run</th><th class="l">family</th>{head}</tr>']
    out += [f'<tr><td class="l">{_e(r.name)}</td><td class="l">{_e(r.family)}</td>{"".join(map(_cell, r.cells))}</tr>'
            for r in view.rows]
    out.append("</table></div>")
    if view.notes:
        out.append("".join(f'<div class="fn">†{i} {_e(n)}</div>' for i, n in enumerate(view.notes, 1)))
    if view.earlier:
        out.append(f'<div class="fn">{EARLIER_MARK} {_e(EARLIER_NOTE)}</div>')
    return "\n".join(out)


def _status(s: EvalStatus) -> str:
    """The evaluation cell of the runs table."""
    if s.error:
        return f'<span class="err">{_e(s.error)}</span>'
    if s.command:
        return f'<span class="warn">{MISSING_EVAL} <code>{_e(s.command)}</code></span>'
    return _e(s.created) + (f' <span class="warn">{s.warnings}</span>' if s.n_warnings else "") + (
        f' <span class="err">⚠ {_e(s.stale)}</span>' if s.stale else "")


def _runs(board: Leaderboard) -> str:
    """The "Runs" section."""
    rows = "".join(f'<tr><td class="l">{_e(r.name)}</td><td class="l">{_e(r.family)}</td><td class="l">{r.kind}'
                   f'</td><td>{_e(r.step)}</td><td class="l">{_status(r.status)}</td>'
                   f'<td class="l">{_e(r.last_eval)}</td>'
                   f'<td class="l"><code>{_e(r.path)}</code></td></tr>' for r in run_rows(board))
    return ('<h2>Runs</h2><table><tr><th class="l">run</th><th class="l">family</th><th class="l">kind</th>'
            '<th>step</th><th class="l">evaluation</th><th class="l">last training eval</th>'
            '<th class="l">path</th></tr>' + rows + "</table>")


def _samples(board: Leaderboard) -> str:
    """The "Samples" section: one card per run, the grid embedded or the text excerpted."""
    cards = []
    for e in board.entries:
        if e.samples is not None and e.samples_kind == "image":
            body = f'<img alt="samples of {_e(e.name)}" src="{_data_uri(e.samples.read_bytes())}">'
        elif e.samples is not None and e.samples_kind == "text":
            body = f"<pre>{_e(excerpt(e.samples))}</pre>"
        else:
            body = f'<div class="sub">{NO_SAMPLES}</div>'
        cards.append(f'<div class="card"><h3>{_e(e.name)} <span class="sub">{_e(e.family)}</span></h3>{body}</div>')
    return f'<h2>Samples</h2><div class="grid">{"".join(cards)}</div>'


def _protocols(board: Leaderboard) -> str:
    """The "Protocols ranked under" section."""
    shared = shared_protocol(board)
    intro = ('<div class="sub">Shared by all: ' + ", ".join(f"{_e(k)} <code>{_e(v)}</code>" for k, v in shared)
             + "</div>" if shared is not None else "")
    head = "".join(f'<th class="l">{c}</th>' for c in PROTOCOL_COLUMNS)
    body = "".join("<tr>" + "".join(
        f'<td class="l">{"<code>" + _e(row[k]) + "</code>" if k == "id" else _e(row[k])}</td>'
        for k in PROTOCOL_COLUMNS) + "</tr>" for row in protocol_rows(board))
    return (f'<h2>Protocols ranked under</h2>{intro}<div class="scroll"><table class="proto">'
            f"<tr>{head}</tr>{body}</table></div>")


def _warnings(board: Leaderboard) -> str:
    """The "Warnings from the evaluations" section."""
    items = "".join(f"<li><b>{_e(name)}</b><ul>" + "".join(f'<li class="warn">{_e(w)}</li>' for w in warnings)
                    + "</ul></li>" for name, warnings in warned_runs(board))
    return f"<h2>Warnings from the evaluations</h2><ul>{items}</ul>"


def render_html(board: Leaderboard, figs: list[Figure]) -> str:
    """The text of ``leaderboard.html``."""
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>genforge leaderboard</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>genforge leaderboard</h1>",
             f'<div class="sub">Generated {_e(board.created)} from {len(board.entries)} run(s). Results are ranked '
             f"only against results measured under the same protocol (per metric); a yellow cell was measured "
             f"differently and is not ranked (hover or see the footnote for why). Green: best.</div>",
             _runs(board)]
    parts += [f"<h2>{_e(title)}</h2>{_table(board, title)}" for title in board.tables]
    parts.append(_samples(board))
    if figs:
        parts.append("<h2>Curves</h2>" + "".join(
            f'<div><img class="plot" alt="{_e(title)}" src="{_data_uri(png)}"></div>' for _, title, png in figs))
    if board.columns:
        parts.append(_protocols(board))
    if warned_runs(board):
        parts.append(_warnings(board))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
