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
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from genforge.evaluation.protocol import METRICS, TABLES, EvalError, format_value, incompatibilities, metric_info
from genforge.evaluation.runeval import sha256_file, read_eval
from genforge.io import atomic_path, atomic_write_text

__all__ = ["CompareOutcome", "Leaderboard", "build_leaderboard", "compare_runs"]

ASSETS_DIR = "leaderboard_files"
TEXT_EXCERPT_CHARS = 700
STALE = "stale: model.safetensors changed since this evaluation; run `genforge eval` again"
NOT_CURVES = {"step", "time", "lr", "steps_per_s", "images_per_s", "tokens_per_s", "elapsed_s", "eval_s"}


@dataclass
class RunEntry:
    """One compared directory: its eval record, metric log and samples."""

    name: str
    path: Path
    kind: str = "image"  # image | text
    family: str = ""
    step: int | None = None
    record: dict[str, Any] | None = None
    error: str = ""
    log: list[dict[str, Any]] = field(default_factory=list)
    samples_png: Path | None = None
    samples_txt: Path | None = None
    stale: bool = False  # model.safetensors changed since eval.json was written

    def results(self, metric: str) -> list[dict[str, Any]]:
        """Current results first, then history, for ``metric``."""
        if self.record is None:
            return []
        rows = list(self.record.get("results", [])) + list(self.record.get("history", []))
        return [r for r in rows if r.get("metric") == metric]


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
        return next((c for cols in self.tables.values() for c in cols if c.metric == metric), None)

    @property
    def columns(self) -> list[MetricColumn]:
        return [c for cols in self.tables.values() for c in cols]


@dataclass
class CompareOutcome:
    md_path: Path
    html_path: Path
    leaderboard: Leaderboard


def _read_log(run_dir: Path) -> list[dict[str, Any]]:
    """Records of ``metrics.jsonl`` (unparseable lines skipped; absent file → [])."""
    path = run_dir / "metrics.jsonl"
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


def _entry(path: Path, name: str) -> RunEntry:
    e = RunEntry(name=name, path=path)
    try:
        e.record = read_eval(path)
    except EvalError as err:
        e.error = str(err)
    cfg_path = path / "config.yaml"
    if cfg_path.is_file():
        try:
            raw = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
            e.family = str((raw.get("model") or {}).get("family", ""))
        except yaml.YAMLError:
            pass
    if e.record is not None:
        sub = e.record.get("subject", {})
        weights = path / "model.safetensors"
        if sub.get("weights_sha256") and weights.is_file():
            e.stale = sha256_file(weights) != sub["weights_sha256"]
        e.family = e.family or str(sub.get("family", ""))
        e.step = sub.get("step")
        if any(metric_info(r["metric"]).group == "text" for r in e.record.get("results", [])):
            e.kind = "text"
    if (path / "tokenizer.json").is_file() or (path / "samples.txt").is_file():
        e.kind = "text"
    e.log = _read_log(path)
    if e.step is None and e.log:
        e.step = int(max(r["step"] for r in e.log))
    e.samples_png = path / "samples.png" if (path / "samples.png").is_file() else None
    e.samples_txt = path / "samples.txt" if (path / "samples.txt").is_file() else None
    return e


def _names(paths: list[Path]) -> list[str]:
    """Directory names, made unique by prefixing parents where two collide."""
    names = [p.name or str(p) for p in paths]
    depth = 1
    while len(set(names)) < len(names) and depth < 6:
        depth += 1
        names = ["/".join(p.parts[-depth:]) for p in paths]
    return names


def _column(metric: str, entries: list[RunEntry]) -> MetricColumn | None:
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
    ref = protos[ref_id]
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
    ranked.sort()
    rank, prev = 0, None
    for i, (key, name) in enumerate(ranked if len(ranked) > 1 else []):
        if key != prev:
            rank, prev = i + 1, key
        cells[name].rank = rank
        cells[name].best = rank == 1
    return MetricColumn(metric, ref, ref_id, cells, excluded)


def build_leaderboard(run_dirs: Sequence[str | Path]) -> Leaderboard:
    """Read every run and build the per-metric columns (see the module docstring)."""
    paths = [Path(p) for p in run_dirs]
    for p in paths:
        if not p.is_dir():
            raise EvalError(f"{p} is not a directory (compare takes run directories, or folders written by "
                            f"`genforge eval --samples`)")
    entries = [_entry(p, n) for p, n in zip(paths, _names([p.resolve() for p in paths]))]
    tables: dict[str, list[MetricColumn]] = {}
    for title in TABLES:
        cols = [c for m, info in METRICS.items() if info.table == title and (c := _column(m, entries)) is not None]
        if cols:
            tables[title] = cols
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return Leaderboard(entries, tables, created)


def _sorted_rows(entries: list[RunEntry], cols: list[MetricColumn]) -> list[RunEntry]:
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


# --------------------------------------------------------------------------- plots


def _curves(entries: list[RunEntry]) -> tuple[dict[str, dict[str, list[tuple[float, float]]]], dict[str, dict]]:
    """(run → loss key → points) for training records, and (eval key → run → points) for evaluation records."""
    train: dict[str, dict[str, list[tuple[float, float]]]] = {}
    evals: dict[str, dict[str, list[tuple[float, float]]]] = {}
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _plots(entries: list[RunEntry]) -> list[tuple[str, str, bytes]]:
    """(file name, title, PNG bytes) for the training-loss and evaluation-curve figures."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    train, evals = _curves(entries)
    figs: list[tuple[str, str, bytes]] = []
    if train:
        names = list(train)
        cols = min(3, len(names))
        rows = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False)
        for ax, name in zip(axes.flat, names):
            for k, pts in sorted(train[name].items()):
                xs, ys = zip(*pts)
                ax.plot(xs, ys, label=k, linewidth=1.4)
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        fig.suptitle("training losses (metrics.jsonl)", fontsize=11)
        fig.tight_layout()
        figs.append(("losses.png", "Training losses", _png(fig)))
        plt.close(fig)
    if evals:
        keys = sorted(evals)
        cols = min(3, len(keys))
        rows = math.ceil(len(keys) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False)
        for ax, k in zip(axes.flat, keys):
            for name, pts in evals[k].items():
                xs, ys = zip(*sorted(pts))
                ax.plot(xs, ys, marker="o", markersize=3, label=name, linewidth=1.4)
            ax.set_title(k, fontsize=10)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        fig.suptitle("evaluation during training", fontsize=11)
        fig.tight_layout()
        figs.append(("eval-curves.png", "Evaluation during training", _png(fig)))
        plt.close(fig)
    return figs


def _excerpt(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    return text if len(text) <= TEXT_EXCERPT_CHARS else text[:TEXT_EXCERPT_CHARS] + " …"


# --------------------------------------------------------------------------- markdown


def _md(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _arrow(metric: str) -> str:
    return {"lower": " ↓", "higher": " ↑"}.get(metric_info(metric).better, "")


def _md_table(board: Leaderboard, title: str) -> list[str]:
    cols = board.tables[title]
    rows = _sorted_rows(board.entries, cols)
    lines = ["| run | family | " + " | ".join(metric_info(c.metric).label + _arrow(c.metric) for c in cols) + " |",
             "|" + "---|" * (len(cols) + 2)]
    notes: list[str] = []
    for e in rows:
        out = []
        for c in cols:
            cell = c.cells.get(e.name)
            if cell is None:
                out.append("—")
            elif cell.flag:
                notes.append(f"{e.name} / {metric_info(c.metric).label}: {cell.flag}")
                out.append(f"{cell.value} †{len(notes)}")
            else:
                v = f"**{cell.value}**" if cell.best else cell.value
                out.append(v + (f" (#{cell.rank})" if cell.rank else "") + (" ʰ" if cell.earlier else ""))
        lines.append(f"| {_md(e.name)} | {_md(e.family)} | " + " | ".join(_md(v) for v in out) + " |")
    if notes:
        lines += [""] + [f"†{i}: {_md(n)}" for i, n in enumerate(notes, 1)]
    if any(c.earlier for col in cols for c in col.cells.values()):
        lines += ["", "ʰ: from an earlier evaluation of the same weights (eval.json history), measured under the "
                      "protocol shared with the other runs"]
    return lines


def _shared(board: Leaderboard) -> dict[str, Any]:
    """Protocol fields equal across every ranked column (shown once above the protocol table)."""
    protos = [c.reference or {} for c in board.columns]
    keys = ("dataset", "image_size", "channels", "tokenizer", "reference_split", "subsample_seed", "seed",
            "genforge_version")
    return {k: protos[0].get(k) for k in keys if protos and all(p.get(k) == protos[0].get(k) for p in protos)}


def _param(v: Any) -> str:
    """A parameter value for a table: strings with whitespace other than spaces are quoted (``prompt='\\n'``)."""
    return repr(v) if isinstance(v, str) and any(ch.isspace() and ch != " " for ch in v) else str(v)


def _protocol_row(c: MetricColumn) -> dict[str, str]:
    """The columns of the protocol table for one metric."""
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


PROTOCOL_COLUMNS = ("metric", "id", "features", "generated", "reference", "params")


def render_markdown(board: Leaderboard, figs: list[tuple[str, str, bytes]], out_dir: Path) -> str:
    lines = ["# genforge leaderboard", "", f"Generated {board.created}. Only results measured under the same "
             "protocol are ranked together (per metric); others are shown with † and the reason.", ""]
    lines += ["## Runs", "", "| run | family | kind | step | evaluation | path |", "|---|---|---|---|---|---|"]
    for e in board.entries:
        if e.error:
            ev = f"⚠ {e.error}"
        elif e.record is None:
            ev = f"no eval.json — run `genforge eval {e.path}`"
        else:
            n = len(e.record.get("warnings", []))
            ev = f"{e.record.get('created')} ({n} warning{'s' if n != 1 else ''})"
            ev += f" ⚠ {STALE}" if e.stale else ""
        lines.append(f"| {_md(e.name)} | {_md(e.family)} | {e.kind} | {e.step if e.step is not None else ''} "
                     f"| {_md(ev)} | `{_md(e.path)}` |")
    for title in board.tables:
        lines += ["", f"## {title}", ""] + _md_table(board, title)
    lines += ["", "## Samples", ""]
    for e in board.entries:
        if e.samples_png is not None:
            rel = os.path.relpath(e.samples_png.resolve(), out_dir.resolve())
            lines += [f"### {e.name}", "", f"![{e.name} samples]({rel})", ""]
        elif e.samples_txt is not None:
            lines += [f"### {e.name}", "", "```", _excerpt(e.samples_txt), "```", ""]
    if figs:
        lines += ["## Curves", ""] + [f"![{title}]({ASSETS_DIR}/{name})" for name, title, _ in figs] + [""]
    if board.columns:
        shared = _shared(board)
        lines += ["", "## Protocols ranked under", ""]
        if shared:
            lines += ["Shared by all: " + ", ".join(f"{k} `{v}`" for k, v in shared.items() if v not in ("", None)),
                      ""]
        lines += ["| " + " | ".join(PROTOCOL_COLUMNS) + " |", "|" + "---|" * len(PROTOCOL_COLUMNS)]
        for c in board.columns:
            row = _protocol_row(c)
            lines.append("| " + " | ".join(_md(row[k]) if k != "id" else f"`{row[k]}`" for k in PROTOCOL_COLUMNS)
                         + " |")
    warned = [e for e in board.entries if e.record and e.record.get("warnings")]
    if warned:
        lines += ["", "## Warnings from the evaluations", ""]
        for e in warned:
            lines += [f"- {_md(e.name)}: " + "; ".join(_md(w) for w in e.record["warnings"])]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- html

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
    return html.escape(str(s), quote=True)


def _data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _html_table(board: Leaderboard, title: str) -> str:
    cols = board.tables[title]
    rows = _sorted_rows(board.entries, cols)
    arrows = {"lower": ("↓", "lower is better"), "higher": ("↑", "higher is better"), "": ("", "not ranked")}
    head = "".join(
        f'<th title="{arrows[metric_info(c.metric).better][1]}">{_e(metric_info(c.metric).label)}'
        f' <span class="dir">{arrows[metric_info(c.metric).better][0]}</span></th>' for c in cols)
    out = [f'<div class="scroll"><table><tr><th class="l">run</th><th class="l">family</th>{head}</tr>']
    notes: list[str] = []
    for e in rows:
        tds = []
        for c in cols:
            cell = c.cells.get(e.name)
            if cell is None:
                tds.append('<td class="na" title="not measured for this run">—</td>')
            elif cell.flag:
                notes.append(f"{e.name} / {metric_info(c.metric).label}: {cell.flag}")
                tds.append(f'<td class="flag" title="{_e(cell.flag)}">{_e(cell.value)} †{len(notes)}</td>')
            else:
                rank = f'<span class="rank">#{cell.rank}</span>' if cell.rank else ""
                if cell.earlier:
                    rank += f'<span class="rank" title="from an earlier evaluation ({_e(cell.earlier)})">ʰ</span>'
                tds.append(f'<td class="{"best" if cell.best else ""}">{_e(cell.value)}{rank}</td>')
        out.append(f'<tr><td class="l">{_e(e.name)}</td><td class="l">{_e(e.family)}</td>{"".join(tds)}</tr>')
    out.append("</table></div>")
    if notes:
        out.append("".join(f'<div class="fn">†{i} {_e(n)}</div>' for i, n in enumerate(notes, 1)))
    if any(c.earlier for col in cols for c in col.cells.values()):
        out.append('<div class="fn">ʰ from an earlier evaluation of the same weights (eval.json history), measured '
                   "under the protocol shared with the other runs</div>")
    return "\n".join(out)


def render_html(board: Leaderboard, figs: list[tuple[str, str, bytes]]) -> str:
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>genforge leaderboard</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>genforge leaderboard</h1>",
             f'<div class="sub">Generated {_e(board.created)} from {len(board.entries)} run(s). Results are ranked '
             f"only against results measured under the same protocol (per metric); a yellow cell was measured "
             f"differently and is not ranked (hover or see the footnote for why). Green: best.</div>"]
    rows = []
    for e in board.entries:
        if e.error:
            ev = f'<span class="err">{_e(e.error)}</span>'
        elif e.record is None:
            ev = f'<span class="warn">no eval.json — run <code>genforge eval {_e(e.path)}</code></span>'
        else:
            n = len(e.record.get("warnings", []))
            ev = f"{_e(e.record.get('created'))}" + (
                f' <span class="warn">({n} warning{"s" if n != 1 else ""})</span>' if n else "") + (
                f' <span class="err">⚠ {_e(STALE)}</span>' if e.stale else "")
        rows.append(f'<tr><td class="l">{_e(e.name)}</td><td class="l">{_e(e.family)}</td><td class="l">{e.kind}'
                    f'</td><td>{_e(e.step if e.step is not None else "")}</td><td class="l">{ev}</td>'
                    f'<td class="l"><code>{_e(e.path)}</code></td></tr>')
    parts.append('<h2>Runs</h2><table><tr><th class="l">run</th><th class="l">family</th><th class="l">kind</th>'
                 '<th>step</th><th class="l">evaluation</th><th class="l">path</th></tr>' + "".join(rows) + "</table>")
    for title in board.tables:
        parts.append(f"<h2>{_e(title)}</h2>{_html_table(board, title)}")
    cards = []
    for e in board.entries:
        if e.samples_png is not None:
            body = f'<img alt="samples of {_e(e.name)}" src="{_data_uri(e.samples_png.read_bytes())}">'
        elif e.samples_txt is not None:
            body = f"<pre>{_e(_excerpt(e.samples_txt))}</pre>"
        else:
            body = '<div class="sub">no samples.png or samples.txt</div>'
        cards.append(f'<div class="card"><h3>{_e(e.name)} <span class="sub">{_e(e.family)}</span></h3>{body}</div>')
    parts.append(f'<h2>Samples</h2><div class="grid">{"".join(cards)}</div>')
    if figs:
        parts.append("<h2>Curves</h2>" + "".join(
            f'<div><img class="plot" alt="{_e(title)}" src="{_data_uri(png)}"></div>' for _, title, png in figs))
    if board.columns:
        shared = _shared(board)
        intro = ("<div class=\"sub\">Shared by all: " + ", ".join(
            f"{_e(k)} <code>{_e(v)}</code>" for k, v in shared.items() if v not in ("", None)) + "</div>"
            if shared else "")
        head = "".join(f'<th class="l">{c}</th>' for c in PROTOCOL_COLUMNS)
        body = "".join("<tr>" + "".join(
            f'<td class="l">{"<code>" + _e(row[k]) + "</code>" if k == "id" else _e(row[k])}</td>'
            for k in PROTOCOL_COLUMNS) + "</tr>" for row in map(_protocol_row, board.columns))
        parts.append(f'<h2>Protocols ranked under</h2>{intro}<div class="scroll"><table class="proto">'
                     f"<tr>{head}</tr>{body}</table></div>")
    warned = [e for e in board.entries if e.record and e.record.get("warnings")]
    if warned:
        items = "".join(f"<li><b>{_e(e.name)}</b><ul>" + "".join(f'<li class="warn">{_e(w)}</li>'
                                                                   for w in e.record["warnings"]) + "</ul></li>"
                        for e in warned)
        parts.append(f"<h2>Warnings from the evaluations</h2><ul>{items}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def default_out(run_dirs: Sequence[str | Path]) -> Path:
    """The common parent folder of the runs (``runs/`` for ``runs/*``)."""
    paths = [Path(p).resolve() for p in run_dirs]
    common = Path(os.path.commonpath([str(p) for p in paths]))
    return common.parent if common in paths else common


def compare_runs(run_dirs: Sequence[str | Path], *, out: str | Path | None = None) -> CompareOutcome:
    """Write ``leaderboard.md``, ``leaderboard.html`` and ``leaderboard_files/*.png`` into ``out``.

    Args:
        run_dirs: run directories (or ``genforge eval --samples`` output folders); at least one.
        out: destination folder (created); default :func:`default_out`.
    """
    if not run_dirs:
        raise EvalError("compare needs at least one run directory")
    board = build_leaderboard(run_dirs)
    out_dir = Path(out) if out is not None else default_out(run_dirs)
    figs = _plots(board.entries)
    md = render_markdown(board, figs, out_dir)
    page = render_html(board, figs)
    out_dir.mkdir(parents=True, exist_ok=True)
    if figs:
        (out_dir / ASSETS_DIR).mkdir(exist_ok=True)
        for name, _, png in figs:
            with atomic_path(out_dir / ASSETS_DIR / name) as tmp:
                tmp.write_bytes(png)
    md_path, html_path = out_dir / "leaderboard.md", out_dir / "leaderboard.html"
    atomic_write_text(md_path, md)
    atomic_write_text(html_path, page)
    return CompareOutcome(md_path, html_path, board)


def format_summary(board: Leaderboard) -> str:
    """A short plain-text table for the terminal: run, then each ranked metric's value and rank."""
    lines = []
    for title, cols in board.tables.items():
        lines.append(f"{title}:")
        rows = [["run"] + [metric_info(c.metric).label for c in cols]]
        for e in _sorted_rows(board.entries, cols):
            row = [e.name]
            for c in cols:
                cell = c.cells.get(e.name)
                row.append("—" if cell is None else cell.value + (" †" if cell.flag else "")
                           + (f" #{cell.rank}" if cell.rank else ""))
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows] + [""]
    missing = [e for e in board.entries if e.record is None]
    for e in missing:
        lines.append(f"{e.name}: " + (e.error or f"no eval.json — run `genforge eval {e.path}`"))
    return "\n".join(lines).rstrip()
