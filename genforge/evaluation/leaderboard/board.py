"""The leaderboard's data model: the compared runs and, per metric, which results rank together.

:func:`build_leaderboard` reads every run directory (through :class:`~genforge.rundir.RunDir`)
and splits each metric's results by protocol; nothing here formats a page.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from genforge.data.download import file_digest
from genforge.evaluation.protocol import METRICS, TABLES, EvalError, format_value, incompatibilities, metric_info
from genforge.evaluation.runeval import read_eval
from genforge.rundir import LOG_BOOKKEEPING, SAMPLE_SUFFIX, WEIGHTS, RunDir, RunDirError, study_trials

__all__ = ["Cell", "Leaderboard", "MetricColumn", "RunEntry", "build_leaderboard", "default_out", "expand_runs",
           "sorted_rows"]

STALE = f"stale: {WEIGHTS} changed since this evaluation; run `genforge eval` again"


@dataclass
class RunEntry:
    """One compared directory: its eval record, metric log and samples."""

    name: str
    path: Path
    kind: str = "image"  # the task: image | text
    family: str = ""
    step: int | None = None
    record: dict[str, Any] | None = None
    error: str = ""
    log: list[dict[str, Any]] = field(default_factory=list)
    samples: Path | None = None  # the final samples file (RunDir.existing_samples)
    stale: bool = False  # the weights changed since eval.json was written

    def results(self, metric: str) -> list[dict[str, Any]]:
        """Current results first, then history, for ``metric``."""
        if self.record is None:
            return []
        rows = list(self.record.get("results", [])) + list(self.record.get("history", []))
        return [r for r in rows if r.get("metric") == metric]

    @property
    def last_eval(self) -> tuple[int, dict[str, float]] | None:
        """(step, finite numeric values) of the last evaluation the trainer logged; None when it logged none."""
        rec = next((r for r in reversed(self.log) if "eval_s" in r), None)
        if rec is None:
            return None
        values = {k: float(v) for k, v in rec.items() if k not in LOG_BOOKKEEPING and isinstance(v, (int, float))
                  and not isinstance(v, bool) and math.isfinite(v)}
        return int(rec["step"]), values

    @property
    def samples_kind(self) -> str | None:
        """``"image"`` or ``"text"``, from the samples file's suffix; None when there is no samples file."""
        if self.samples is None:
            return None
        return next((task for task, suffix in SAMPLE_SUFFIX.items() if self.samples.suffix == suffix), None)


@dataclass
class Cell:
    value: str
    rank: int | None = None  # set only when at least two runs are ranked
    best: bool = False
    flag: str = ""  # why this value is not ranked with the others
    earlier: str = ""  # creation time when the value comes from the run's history (an earlier evaluation)


@dataclass
class MetricColumn:
    metric: str
    reference: dict[str, Any] | None  # the protocol ranked under
    protocol_id: str
    cells: dict[str, Cell]  # run name → cell
    excluded: dict[str, list[str]]  # run name → reasons


@dataclass
class Leaderboard:
    """Everything rendered into the md and html files."""

    entries: list[RunEntry]
    tables: dict[str, list[MetricColumn]]  # table title (``protocol.TABLES``) → its columns; only non-empty ones
    created: str

    def column(self, metric: str) -> MetricColumn | None:
        """The column of ``metric``; None when no run has a result for it."""
        return next((c for cols in self.tables.values() for c in cols if c.metric == metric), None)

    @property
    def columns(self) -> list[MetricColumn]:
        """Every column, table by table."""
        return [c for cols in self.tables.values() for c in cols]


def _read_log(path: Path) -> list[dict[str, Any]]:
    """Records of a metric log (unparseable lines skipped; absent file → [])."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), (int, float)):
            out.append(rec)
    return out


def _read_config(run: RunDir) -> dict[str, Any] | None:
    """The run's config as a mapping; None when there is none or it cannot be read."""
    if not run.config.is_file():
        return None
    try:
        return run.read_config()
    except RunDirError:
        return None


def _kind(run: RunDir, raw: dict[str, Any] | None, record: dict[str, Any] | None) -> str:
    """The run's task as its config records it; without a (usable) config, ``text`` when the record has text
    metrics, else ``image``."""
    if raw is not None:
        try:
            return run.task(raw)
        except RunDirError:
            pass
    results = record.get("results", []) if record is not None else []
    return "text" if any(metric_info(r["metric"]).group == "text" for r in results) else "image"


def _entry(path: Path, name: str) -> RunEntry:
    """Everything compare reads from one directory."""
    run = RunDir(path)
    e = RunEntry(name=name, path=path)
    try:
        e.record = read_eval(path)
    except EvalError as err:
        e.error = str(err)
    raw = _read_config(run)
    if raw is not None:
        parents = run.verify_chain(raw)  # a run whose parent is missing or changed is refused, naming it
        e.family = run.family(raw) + "".join(f" on {p.role} {p.path.name}" for p in parents)
    if e.record is not None:
        sub = e.record.get("subject", {})
        if sub.get("weights_sha256") and run.weights.is_file():
            e.stale = file_digest(run.weights) != sub["weights_sha256"]
        e.family = e.family or str(sub.get("family", ""))
        e.step = sub.get("step")
    e.kind = _kind(run, raw, e.record)
    e.log = _read_log(run.metrics_log)
    if e.step is None and e.log:
        e.step = int(max(r["step"] for r in e.log))
    e.samples = run.existing_samples()
    return e


def _names(paths: list[Path]) -> list[str]:
    """Directory names, made unique by prefixing parents where two collide."""
    names = [p.name or str(p) for p in paths]
    depth = 1
    while len(set(names)) < len(names) and depth < 6:
        depth += 1
        names = ["/".join(p.parts[-depth:]) for p in paths]
    return names


def _reference(metric: str, entries: list[RunEntry]) -> tuple[str, dict[str, Any]] | None:
    """(id, protocol) under which most runs have a ``metric`` result (ties: the earliest run); None if none has."""
    by_id: dict[str, list[str]] = {}
    protos: dict[str, dict[str, Any]] = {}
    for e in entries:
        for r in e.results(metric):
            pid = r.get("protocol_id", "")
            if e.name not in by_id.setdefault(pid, []):
                by_id[pid].append(e.name)
            protos.setdefault(pid, r.get("protocol", {}))
    if not by_id:
        return None
    order = [e.name for e in entries]
    ref_id = max(by_id, key=lambda pid: (len(by_id[pid]), -min(order.index(n) for n in by_id[pid])))
    return ref_id, protos[ref_id]


def _rank(cells: dict[str, Cell], ranked: list[tuple[float, str]]) -> None:
    """Set rank and best of the cells named in ``ranked`` ((sort key, run name); ties share a rank)."""
    ranked.sort()
    rank, prev = 0, None
    for i, (key, name) in enumerate(ranked if len(ranked) > 1 else []):
        if key != prev:
            rank, prev = i + 1, key
        cells[name].rank = rank
        cells[name].best = rank == 1


def _column(metric: str, entries: list[RunEntry]) -> MetricColumn | None:
    """The column of ``metric``: every run's cell, ranked under the reference protocol; None when no run has one."""
    found = _reference(metric, entries)
    if found is None:
        return None
    ref_id, ref = found
    info = metric_info(metric)
    cells: dict[str, Cell] = {}
    excluded: dict[str, list[str]] = {}
    ranked: list[tuple[float, str]] = []
    for e in entries:
        rows = e.results(metric)
        if not rows:
            continue
        match = next((r for r in rows if r.get("protocol_id") == ref_id), None)
        if e.stale:
            r = match or rows[0]
            cells[e.name] = Cell(format_value(metric, r.get("value"), r.get("std")), flag=STALE)
            excluded[e.name] = [STALE]
        elif match is not None:
            current = any(r is match for r in e.record.get("results", []))
            cells[e.name] = Cell(format_value(metric, match.get("value"), match.get("std")),
                                 earlier="" if current else str(match.get("created", "")))
            v = match.get("value")
            if info.better and isinstance(v, (int, float)) and math.isfinite(v):
                ranked.append((v if info.better == "lower" else -v, e.name))
        else:
            r = rows[0]
            reasons = incompatibilities(ref, r.get("protocol", {})) or ["protocol differs"]
            excluded[e.name] = reasons
            cells[e.name] = Cell(format_value(metric, r.get("value"), r.get("std")),
                                 flag="not comparable: " + "; ".join(reasons[:3]))
    _rank(cells, ranked)
    return MetricColumn(metric, ref, ref_id, cells, excluded)


def expand_runs(run_dirs: Sequence[str | Path]) -> list[Path]:
    """The directories to compare: each study folder (``genforge tune``) replaced by its trials, in order."""
    out: list[Path] = []
    for p in map(Path, run_dirs):
        if not p.is_dir():
            raise EvalError(f"{p} is not a directory (compare takes run directories, study folders of "
                            f"`genforge tune`, or folders written by `genforge eval --samples`)")
        trials = study_trials(p)
        if trials == []:
            raise EvalError(f"{p} is a study folder without trial run directories yet (trials/ is empty)")
        out += [p] if trials is None else trials
    return out


def build_leaderboard(run_dirs: Sequence[str | Path]) -> Leaderboard:
    """Read every run (a study folder: its trials) and build the per-metric columns; returns the
    :class:`Leaderboard` (not yet rendered)."""
    paths = expand_runs(run_dirs)
    entries = [_entry(p, n) for p, n in zip(paths, _names([p.resolve() for p in paths]))]
    tables: dict[str, list[MetricColumn]] = {}
    names = list(METRICS)  # then application metrics (inpaint/center/psnr …) in the order the records hold them
    for e in entries:
        rec = e.record or {}
        names += [m for r in [*rec.get("results", []), *rec.get("history", [])] if (m := r.get("metric"))
                  and m not in names]
    for title in TABLES:
        cols = [c for m in names if metric_info(m).table == title and (c := _column(m, entries)) is not None]
        if cols:
            tables[title] = cols
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return Leaderboard(entries, tables, created)


def sorted_rows(entries: list[RunEntry], cols: list[MetricColumn]) -> list[RunEntry]:
    """Runs of a table, ranked by the first metric with the most ranked runs; unranked last, in input order."""
    rows = [e for e in entries if any(e.name in c.cells for c in cols)]
    if not cols:
        return rows
    key_col = max(cols, key=lambda c: sum(cell.rank is not None for cell in c.cells.values()))
    order = {e.name: i for i, e in enumerate(entries)}

    def key(e: RunEntry) -> tuple[int, int]:
        cell = key_col.cells.get(e.name)
        return (cell.rank if cell is not None and cell.rank is not None else 10**6, order[e.name])

    return sorted(rows, key=key)


def default_out(run_dirs: Sequence[str | Path]) -> Path:
    """The common parent folder of the runs (``runs/`` for ``runs/*``); a single study folder itself."""
    paths = [Path(p).resolve() for p in run_dirs]
    if len(paths) == 1 and study_trials(paths[0]) is not None:
        return paths[0]
    common = Path(os.path.commonpath([str(p) for p in paths]))
    return common.parent if common in paths else common
