"""The record of an evaluation: ``eval.json`` (built, merged with history, written, read) and ``eval.md``.

    >>> record = build_record(report, subject, options, read_eval(run_dir), seconds)
    >>> write_record(run_dir, record); print(format_table(record))

``eval.json`` (format ``genforge-eval/1``)::

    format, created, genforge_version
    subject      what was evaluated: kind (run | samples), path, name, family,
                 weights_sha256 (runs) or samples_sha256, step (runs)
    options      the settings asked for (n, seeds, features, metrics …)
    results      [{metric, value, std, details, protocol_id, protocol}]  (this evaluation)
    history      results of earlier evaluations of the same weights under *other*
                 protocols (e.g. another N), newest first; a result is replaced
                 when the same metric is measured again under the same protocol
    warnings     sample-size and comparability warnings (also printed)
    notes        metrics skipped and why, what a number is (e.g. a bound)
    generation   how samples were drawn (conditioning, seed, n)
    timings      seconds per stage, and total

Writing never destroys anything: the evaluation runs to completion before any
file is touched; ``eval.json`` and ``eval.md`` are then each replaced
atomically (write to a temporary, rename), and nothing else in the directory
is modified. Earlier results of the same weights survive in ``history``.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from genforge import __version__
from genforge.evaluation.protocol import EvalError, Report, format_value, incompatibilities, metric_info
from genforge.io import atomic_write_text, file_lock, remove_stale
from genforge.rundir import EVAL_JSON, EVAL_MD, RunDir

__all__ = ["EVAL_FORMAT", "EvalOutcome", "build_record", "format_markdown", "format_table", "last_step",
           "read_eval", "write_record", "commit_record", "eval_lock", "repair_eval", "EVAL_LOCK"]

EVAL_FORMAT = "genforge-eval/1"
EVAL_LOCK = ".eval.lock"  # in the evaluated folder: held (flock) while one eval merges and writes its results


@dataclass
class EvalOutcome:
    """The written record (as in ``eval.json``), where it went, and the in-memory report."""

    record: dict[str, Any]
    json_path: Path
    md_path: Path
    report: Report


def read_eval(directory: str | Path) -> dict[str, Any] | None:
    """``directory/eval.json`` as a dict; None when absent. A damaged file raises ``EvalError``."""
    path = RunDir(directory).eval_json
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise EvalError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(record, dict) or record.get("format") != EVAL_FORMAT:
        raise EvalError(f"{path} is not a genforge evaluation ({EVAL_FORMAT})")
    return record


def last_step(run_dir: Path) -> int | None:
    """The last step logged in the run's metric log (None without one)."""
    path = RunDir(run_dir).metrics_log
    if not path.is_file():
        return None
    step = None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            step = int(json.loads(line).get("step", step))
        except (ValueError, TypeError, AttributeError):
            continue
    return step


def _merge_history(new_results: list[dict[str, Any]], previous: dict[str, Any] | None,
                   subject: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Earlier results of the same subject under other protocols, newest first (see the module docstring)."""
    if previous is None:
        return [], []
    same = (previous.get("subject", {}).get("weights_sha256") == subject.get("weights_sha256")
            and previous.get("subject", {}).get("samples_sha256") == subject.get("samples_sha256"))
    if not same:
        return [], ["the previous eval.json described other weights/samples; its results were not kept"]
    seen = {(r["metric"], r["protocol_id"]) for r in new_results}
    history = []
    for r in list(previous.get("results", [])) + list(previous.get("history", [])):
        key = (r.get("metric"), r.get("protocol_id"))
        if key not in seen:
            seen.add(key)
            history.append({**r, "created": r.get("created", previous.get("created"))})
    return history, []


def build_record(report: Report, subject: dict[str, Any], options: dict[str, Any], previous: dict[str, Any] | None,
                 total_s: float) -> dict[str, Any]:
    """The ``eval.json`` record of ``report``, with earlier results of the same subject kept in ``history``."""
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    results = [r.to_dict() for r in report.results]
    history, notes = _merge_history(results, previous, subject)
    for r in results:
        r["created"] = created
    return {"format": EVAL_FORMAT, "created": created, "genforge_version": __version__, "subject": subject,
            "options": options, "results": results, "history": history, "warnings": list(report.warnings),
            "notes": list(report.notes) + notes, "generation": report.generation,
            "timings": {**report.timings, "total": round(total_s, 3)}}


def write_record(out_dir: Path, record: dict[str, Any]) -> tuple[Path, Path]:
    """eval.json then eval.md, each atomically (eval.md is rendered from eval.json: :func:`repair_eval` redoes
    it when a kill fell between the two)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RunDir(out_dir).eval_json, RunDir(out_dir).eval_md
    atomic_write_text(json_path, json.dumps(record, indent=1, allow_nan=True) + "\n")
    atomic_write_text(md_path, format_markdown(record))
    return json_path, md_path


@contextmanager
def eval_lock(out_dir: Path) -> Iterator[None]:
    """Hold the run's eval lock (``EVAL_LOCK``, flock): one eval at a time reads, merges and writes eval.json;
    another waits (saying so in one line), so concurrent evals both keep their results."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(out_dir / EVAL_LOCK, what=str(RunDir(out_dir).eval_json)):
        yield


def repair_eval(out_dir: Path) -> list[str]:
    """What a killed eval left (call under :func:`eval_lock`): its temporaries are removed, and an eval.md that
    is not the rendering of eval.json (the kill fell between the two renames) is rendered again. Returns notes."""
    removed = remove_stale(out_dir, EVAL_JSON) + remove_stale(out_dir, EVAL_MD)
    notes = [f"removed {p.name}" for p in removed]
    try:
        record = read_eval(out_dir)
    except EvalError:
        return notes  # a damaged eval.json is reported by the caller
    md_path = RunDir(out_dir).eval_md
    if record is not None and (not md_path.is_file() or md_path.read_text(encoding="utf-8")
                               != format_markdown(record)):
        atomic_write_text(md_path, format_markdown(record))
        print(f"rewrote {md_path} from eval.json: an interrupted eval left them disagreeing", file=sys.stderr)
        notes.append(f"rewrote {md_path.name}")
    return notes


def commit_record(out_dir: Path, make: Callable[[dict[str, Any] | None], dict[str, Any]]
                  ) -> tuple[dict[str, Any], Path, Path]:
    """Under the eval lock: repair, read the latest eval.json, build the record from it (``make(previous)``, which
    keeps earlier results in ``history``) and write both files. Returns (record, eval.json, eval.md)."""
    with eval_lock(out_dir):
        repair_eval(out_dir)
        record = make(read_eval(out_dir))
        json_path, md_path = write_record(out_dir, record)
    return record, json_path, md_path


def _rows(record: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for r in record.get("results", []):
        info = metric_info(r["metric"])
        p = r["protocol"]
        n = f"{p.get('n_generated') or '-'} / {p.get('n_reference') or '-'}"
        rows.append((info.label, format_value(r["metric"], r.get("value"), r.get("std")), n,
                     p.get("extractor") or p.get("tokenizer", "").split("/")[0] or "-"))
    return rows


def format_table(record: dict[str, Any]) -> str:
    """The results as an aligned plain-text table, then warnings and notes (what ``genforge eval`` prints)."""
    head = ("metric", "value", "N gen / N ref", "features / tokenizer")
    rows = [head] + _rows(record)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for w in record.get("warnings", []):
        lines.append(f"! {w}")
    for note in record.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _common_protocol(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Protocol fields shared by every result (shown once in eval.md)."""
    if not results:
        return {}
    common = dict(results[0]["protocol"])
    for r in results[1:]:
        for k in list(common):
            if r["protocol"].get(k) != common[k]:
                del common[k]
    for k in ("metric", "params", "format"):
        common.pop(k, None)
    return {k: v for k, v in common.items() if v not in ("", None, {})}


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def format_markdown(record: dict[str, Any]) -> str:
    """``eval.md``: results table with each result's protocol, then warnings, notes, timings."""
    sub = record.get("subject", {})
    lines = [f"# Evaluation: {sub.get('name', '?')}", "",
             f"- subject: {sub.get('kind')} `{sub.get('path')}` ({sub.get('family', '')}"
             + (f", step {sub['step']}" if sub.get("step") is not None else "") + ")",
             f"- created: {record.get('created')} with genforge {record.get('genforge_version')}", ""]
    gen = record.get("generation") or {}
    if gen:
        lines += ["- samples: " + ", ".join(f"{k} = {v}" for k, v in gen.items()), ""]
    lines += ["| metric | value | N gen / N ref | protocol | protocol id |", "|---|---|---|---|---|"]
    for r in record.get("results", []):
        p = r["protocol"]
        params = ", ".join(f"{k}={v!r}" if isinstance(v, str) and not v.isprintable() else f"{k}={v}"
                           for k, v in (p.get("params") or {}).items())
        desc = _md_escape(f"{p.get('extractor') or p.get('tokenizer') or 'model'}"
                          + (f"; {params}" if params else ""))
        lines.append(f"| {metric_info(r['metric']).label} | {format_value(r['metric'], r.get('value'), r.get('std'))} "
                     f"| {p.get('n_generated') or '-'} / {p.get('n_reference') or '-'} | {desc} "
                     f"| `{r['protocol_id']}` |")
    common = _common_protocol(record.get("results", []))
    if common:
        lines += ["", "## Protocol (shared by all results above)", ""]
        lines += [f"- {k}: `{json.dumps(v) if isinstance(v, (dict, list)) else v}`" for k, v in common.items()]
    if record.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- ⚠ {_md_escape(w)}" for w in record["warnings"]]
    if record.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {_md_escape(n)}" for n in record["notes"]]
    history = record.get("history") or []
    if history:
        lines += ["", "## Earlier results under other protocols", "",
                  "| metric | value | created | differs from the current protocol in |", "|---|---|---|---|"]
        current = {r["metric"]: r["protocol"] for r in record.get("results", [])}
        for r in history:
            diff = incompatibilities(current[r["metric"]], r["protocol"]) if r["metric"] in current else []
            value = format_value(r["metric"], r.get("value"), r.get("std"))
            lines.append(f"| {metric_info(r['metric']).label} | {value} | {r.get('created', '')} "
                         f"| {_md_escape('; '.join(diff[:3]) or '-')} |")
    t = record.get("timings") or {}
    if t:
        lines += ["", "## Timings (seconds)", "", ", ".join(f"{k} {v:.2f}" for k, v in t.items())]
    return "\n".join(lines) + "\n"
