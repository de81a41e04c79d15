"""What every leaderboard table says, independent of markup: the renderers only escape and decorate.

A metric table (:func:`metric_table`) fixes the row order, each cell's text,
rank, best flag and footnote number (``†n``: why a value is not ranked) and
whether the ``ʰ`` footnote (a value from an earlier evaluation) is needed. The
runs table (:func:`run_rows`), the protocol table (:func:`protocol_rows`,
:func:`shared_protocol`), the samples (:func:`excerpt`) and the warnings
(:func:`warned_runs`) are prepared here in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genforge.evaluation.leaderboard.board import STALE, Cell, Leaderboard, MetricColumn, RunEntry, sorted_rows
from genforge.evaluation.protocol import metric_info
from genforge.rundir import EVAL_JSON, SAMPLE_SUFFIX, SAMPLES_STEM

__all__ = ["CellView", "EvalStatus", "Header", "RowView", "RunRow", "TableView", "excerpt", "metric_table",
           "protocol_rows", "run_rows", "shared_protocol", "warned_runs"]

NOT_MEASURED = "—"
NOTE_MARK = "†"
EARLIER_MARK = "ʰ"
EARLIER_NOTE = (f"from an earlier evaluation of the same weights ({EVAL_JSON} history), measured under the "
                "protocol shared with the other runs")
MISSING_EVAL = f"no {EVAL_JSON} — run"
NO_SAMPLES = "no " + " or ".join(f"{SAMPLES_STEM}{suffix}" for suffix in SAMPLE_SUFFIX.values())
TEXT_EXCERPT_CHARS = 700
LAST_EVAL_KEYS = 3  # values of the last training-time evaluation shown in the runs table
ARROWS = {"lower": ("↓", "lower is better"), "higher": ("↑", "higher is better"), "": ("", "not ranked")}
PROTOCOL_COLUMNS = ("metric", "id", "features", "generated", "reference", "params")
SHARED_FIELDS = ("dataset", "image_size", "channels", "tokenizer", "reference_split", "subsample_seed", "seed",
                 "genforge_version")


@dataclass(frozen=True)
class Header:
    """A metric column's title: its label, direction arrow (``↓``, ``↑`` or ``""``) and what the arrow means."""

    label: str
    arrow: str
    hint: str


@dataclass(frozen=True)
class CellView:
    """One table cell.

    ``state`` is ``"na"`` (not measured: ``value`` is ``—``), ``"flag"`` (not ranked: ``note`` is its
    footnote mark, ``flag`` the reason), ``"best"`` (ranked first) or ``""`` (any other value).
    """

    value: str
    state: str = ""
    rank: str = ""  # "#2" when ranked
    note: str = ""  # "†3" when flagged
    flag: str = ""
    earlier: str = ""  # creation time of the earlier evaluation the value comes from


@dataclass(frozen=True)
class RowView:
    name: str
    family: str
    cells: list[CellView]


@dataclass(frozen=True)
class TableView:
    """A metric table: ``notes[n - 1]`` is footnote ``†n``; ``earlier``: the ``ʰ`` footnote is shown."""

    headers: list[Header]
    rows: list[RowView]
    notes: list[str]
    earlier: bool


def _cell_view(cell: Cell | None, run: str, label: str, notes: list[str]) -> CellView:
    """The view of ``cell`` of ``run`` in the column ``label``; a flagged cell appends its footnote to ``notes``."""
    if cell is None:
        return CellView(NOT_MEASURED, "na")
    if cell.flag:
        notes.append(f"{run} / {label}: {cell.flag}")
        return CellView(cell.value, "flag", note=f"{NOTE_MARK}{len(notes)}", flag=cell.flag)
    return CellView(cell.value, "best" if cell.best else "", rank=f"#{cell.rank}" if cell.rank else "",
                    earlier=cell.earlier)


def metric_table(board: Leaderboard, title: str) -> TableView:
    """The table ``title`` of ``board``: ranked rows first (:func:`sorted_rows`), footnotes numbered in reading
    order."""
    cols = board.tables[title]
    infos = [metric_info(c.metric) for c in cols]
    headers = [Header(info.label, *ARROWS.get(info.better, ARROWS[""])) for info in infos]
    notes: list[str] = []
    rows = [RowView(e.name, e.family, [_cell_view(c.cells.get(e.name), e.name, info.label, notes)
                                       for c, info in zip(cols, infos)])
            for e in sorted_rows(board.entries, cols)]
    earlier = any(cell.earlier for col in cols for cell in col.cells.values())
    return TableView(headers, rows, notes, earlier)


@dataclass(frozen=True)
class EvalStatus:
    """A run's evaluation: ``error`` (eval.json unreadable), else ``command`` (no eval.json: what writes one),
    else when it was ``created``, its ``warnings`` count (``"(2 warnings)"``) and ``stale`` (why not ranked)."""

    error: str = ""
    command: str = ""
    created: str = ""
    n_warnings: int = 0
    warnings: str = ""
    stale: str = ""


@dataclass(frozen=True)
class RunRow:
    name: str
    family: str
    kind: str
    step: str
    status: EvalStatus
    path: str
    last_eval: str = ""  # the trainer's last logged evaluation, e.g. "val/loss 2.389 @ 400"


def last_eval_text(entry: RunEntry, limit: int = LAST_EVAL_KEYS) -> str:
    """``"val/loss 2.389, val/ppl 10.9 @ 400"``: the first ``limit`` values of a run's last logged evaluation."""
    last = entry.last_eval
    if last is None:
        return ""
    step, values = last
    shown = [f"{k} {v:.4g}" for k, v in list(values.items())[:limit]]
    return ", ".join(shown) + (" …" if len(values) > limit else "") + f" @ {step}"


def run_rows(board: Leaderboard) -> list[RunRow]:
    """One row per compared run, in input order."""
    rows = []
    for e in board.entries:
        if e.error:
            status = EvalStatus(error=e.error)
        elif e.record is None:
            status = EvalStatus(command=f"genforge eval {e.path}")
        else:
            n = len(e.record.get("warnings", []))
            status = EvalStatus(created=str(e.record.get("created")), n_warnings=n,
                                warnings=f"({n} warning{'s' if n != 1 else ''})", stale=STALE if e.stale else "")
        rows.append(RunRow(e.name, e.family, e.kind, str(e.step) if e.step is not None else "", status, str(e.path),
                           last_eval_text(e)))
    return rows


def warned_runs(board: Leaderboard) -> list[tuple[str, list[str]]]:
    """(run name, warnings) of each run whose evaluation warned."""
    return [(e.name, list(e.record["warnings"])) for e in board.entries if e.record and e.record.get("warnings")]


def shared_protocol(board: Leaderboard) -> list[tuple[str, str]] | None:
    """The protocol fields equal across every column, shown once above the protocol table, as (field, value)
    for those with a value; None when no field is shared."""
    protos = [c.reference or {} for c in board.columns]
    shared = {k: protos[0].get(k) for k in SHARED_FIELDS if protos and all(p.get(k) == protos[0].get(k)
                                                                             for p in protos)}
    if not shared:
        return None
    return [(k, str(v)) for k, v in shared.items() if v not in ("", None)]


def _param(v: Any) -> str:
    """A parameter value for a table: strings with whitespace other than spaces are quoted (``prompt='\\n'``)."""
    return repr(v) if isinstance(v, str) and any(ch.isspace() and ch != " " for ch in v) else str(v)


def _protocol_row(c: MetricColumn) -> dict[str, str]:
    """The cells of the protocol table (keys :data:`PROTOCOL_COLUMNS`) for one metric."""
    p = c.reference or {}
    extractor = ""
    if p.get("extractor"):
        extractor = f"{p['extractor']} ({p.get('feature_dim')}-d, sha256 {str(p.get('extractor_sha256', ''))[:12]}…)"
    elif p.get("tokenizer"):
        extractor = f"tokenizer {p['tokenizer']}"
    ref = ""
    if p.get("n_reference"):
        ref = f"{p['n_reference']} {p.get('reference_split', '')} ({p.get('reference_subsample', '')}" + (
            f", seed {p.get('subsample_seed')})" if p.get("reference_subsample") == "shuffled" else ")")
    gen = f"{p['n_generated']} (seed {p.get('seed')})" if p.get("n_generated") else "—"
    params = "; ".join(f"{k}={_param(v)}" for k, v in (p.get("params") or {}).items())
    return {"metric": metric_info(c.metric).label, "id": c.protocol_id, "features": extractor or "—",
            "generated": gen, "reference": ref or "—", "params": params or "—"}


def protocol_rows(board: Leaderboard) -> list[dict[str, str]]:
    """One row (keys :data:`PROTOCOL_COLUMNS`) per column: the protocol it is ranked under."""
    return [_protocol_row(c) for c in board.columns]


def excerpt(path: Path) -> str:
    """The beginning of a text samples file (at most :data:`TEXT_EXCERPT_CHARS`, then `` …``)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return text if len(text) <= TEXT_EXCERPT_CHARS else text[:TEXT_EXCERPT_CHARS] + " …"
