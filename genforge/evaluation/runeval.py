"""``genforge eval``: evaluate a run directory or a file of samples, and write ``eval.json`` / ``eval.md``.

    >>> out = evaluate_run("runs/mnist-dcgan", n=10_000)             # image or text run, detected
    >>> out = evaluate_samples("gen.npz", dataset="mnist", data_dir="./mnist")
    >>> print(format_table(out.record))

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
import hashlib
import json
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor

from genforge import __version__
from genforge.config import DataConfig, from_dict
from genforge.data import is_text_dataset, load_images, load_text
from genforge.evaluation.images import IMAGE_METRICS, ImageEvalOptions, evaluate_images
from genforge.evaluation.protocol import EvalError, Report, format_value, incompatibilities, metric_info
from genforge.evaluation.textmetrics import TEXT_METRICS, TextEvalOptions, evaluate_text
from genforge.io import atomic_write_text

__all__ = ["EVAL_FORMAT", "EvalOutcome", "evaluate_run", "evaluate_samples", "format_table", "load_samples",
           "read_eval"]

EVAL_FORMAT = "genforge-eval/1"
EVAL_JSON, EVAL_MD = "eval.json", "eval.md"


@dataclass
class EvalOutcome:
    """The written record (as in ``eval.json``), where it went, and the in-memory report."""

    record: dict[str, Any]
    json_path: Path
    md_path: Path
    report: Report


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_eval(directory: str | Path) -> dict[str, Any] | None:
    """``directory/eval.json`` as a dict; None when absent. A damaged file raises ``EvalError``."""
    path = Path(directory) / EVAL_JSON
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise EvalError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(record, dict) or record.get("format") != EVAL_FORMAT:
        raise EvalError(f"{path} is not a genforge evaluation ({EVAL_FORMAT})")
    return record


def _pick(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``options`` that are fields of ``cls`` and not None."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in options.items() if k in names and v is not None}


def _data_config(run_dir: Path, data_dir: str | Path | None) -> tuple[dict[str, Any], DataConfig]:
    raw = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    data_raw = dict(raw.get("data") or {})
    if data_dir is not None:
        data_raw["data_dir"] = str(Path(data_dir).expanduser().resolve())
    return raw, from_dict(DataConfig, data_raw, prefix="data")


def _last_step(run_dir: Path) -> int | None:
    path = run_dir / "metrics.jsonl"
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


def _record(report: Report, subject: dict[str, Any], options: dict[str, Any], previous: dict[str, Any] | None,
            total_s: float) -> dict[str, Any]:
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    results = [r.to_dict() for r in report.results]
    history, notes = _merge_history(results, previous, subject)
    for r in results:
        r["created"] = created
    return {"format": EVAL_FORMAT, "created": created, "genforge_version": __version__, "subject": subject,
            "options": options, "results": results, "history": history, "warnings": list(report.warnings),
            "notes": list(report.notes) + notes, "generation": report.generation,
            "timings": {**report.timings, "total": round(total_s, 3)}}


def _write(out_dir: Path, record: dict[str, Any]) -> tuple[Path, Path]:
    """eval.json then eval.md, each atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / EVAL_JSON, out_dir / EVAL_MD
    atomic_write_text(json_path, json.dumps(record, indent=1, allow_nan=True) + "\n")
    atomic_write_text(md_path, format_markdown(record))
    return json_path, md_path


def evaluate_run(run_dir: str | Path, *, metrics: tuple[str, ...] | None = None, data_dir: str | Path | None = None,
                 device: str = "cpu", cache_dir: str | Path | None = None, progress: bool = False,
                 **options: Any) -> EvalOutcome:
    """Evaluate a run directory (image or text run, detected by ``tokenizer.json``) and write its eval files.

    Args:
        run_dir: written by ``genforge train``.
        metrics: metric names of the run's kind (``IMAGE_METRICS`` or ``TEXT_METRICS``); None = all that apply.
        data_dir: read the dataset from here instead of the path in ``config.yaml`` / the cache.
        device: where the model (and the image extractor) run.
        cache_dir: genforge cache root (evaluators, reference features, token ids).
        options: fields of :class:`ImageEvalOptions` or :class:`TextEvalOptions`; those that do not
            apply to the run's kind, and None values, are ignored.

    Raises:
        EvalError: not a run directory, bad options; plus the errors of the evaluators and metrics.
    """
    from genforge.models import load  # every family; off the import path of genforge.evaluation

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    for name in ("config.yaml", "model.safetensors"):
        if not (run_dir / name).is_file():
            raise EvalError(f"{run_dir} is not a genforge run directory ({name} is missing); "
                            f"evaluate a file of images with --samples FILE --dataset NAME instead")
    previous = read_eval(run_dir)  # a damaged eval.json is reported before any work
    raw, data_cfg = _data_config(run_dir, data_dir)
    cache = Path(cache_dir) if cache_dir is not None else None
    text_run = (run_dir / "tokenizer.json").is_file()
    if text_run != is_text_dataset(data_cfg.name):
        raise EvalError(f"{run_dir}: tokenizer.json {'present' if text_run else 'absent'} but data.name is "
                        f"{data_cfg.name!r}")
    subject = {"kind": "run", "path": str(run_dir.resolve()), "name": run_dir.resolve().name,
               "family": (raw.get("model") or {}).get("family", ""), "step": _last_step(run_dir),
               "weights_sha256": sha256_file(run_dir / "model.safetensors")}
    if text_run:
        from genforge.sampling.text import load_text_model

        opts = TextEvalOptions(metrics=metrics, progress=progress, **_pick(TextEvalOptions, options))
        model, tokenizer = load_text_model(run_dir, device=device)
        data = load_text(data_cfg, cache_dir=cache, progress=progress)
        report = evaluate_text(model, tokenizer, data, data_cfg, opts)
    else:
        opts = ImageEvalOptions(metrics=metrics, device=device, cache_dir=cache, progress=progress,
                                **_pick(ImageEvalOptions, options))
        t = time.perf_counter()
        data = load_images(data_cfg, cache_dir=cache)
        load_s = time.perf_counter() - t
        model = load(run_dir).to(device).eval()
        report = evaluate_images(data, data_cfg, opts, model=model)
        report.timings = {"load_data": round(load_s, 4), **report.timings}
    shown = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items() if k != "progress"}
    record = _record(report, subject, {**shown, "device": device}, previous, time.perf_counter() - t0)
    json_path, md_path = _write(run_dir, record)
    return EvalOutcome(record, json_path, md_path, report)


def evaluate_samples(path: str | Path, *, dataset: str, data_dir: str | Path | None = None,
                     out: str | Path | None = None, metrics: tuple[str, ...] | None = None, n: int | None = None,
                     device: str = "cpu", cache_dir: str | Path | None = None, progress: bool = False,
                     **options: Any) -> EvalOutcome:
    """Evaluate images made by any tool (see :func:`load_samples`) against ``dataset``.

    The reference is the dataset at the samples' size and channels (resized and
    converted exactly as training data would be). Writes ``eval.json``, ``eval.md``
    and ``samples.png`` (a 64-image grid, for ``genforge compare``) into ``out``,
    by default the folder ``<stem>-eval`` beside the samples.

    Args:
        n: images per side (default: all samples; more samples than ``n`` are subsampled with the seed).
        options: fields of :class:`ImageEvalOptions`.
    """
    from genforge.sampling.images import save_grid

    t0 = time.perf_counter()
    src = Path(path).expanduser()
    if is_text_dataset(dataset):
        raise EvalError(f"--samples takes images; {dataset!r} is a text dataset")
    images = load_samples(src)
    out_dir = Path(out) if out is not None else src.resolve().parent / f"{src.resolve().name.split('.')[0]}-eval"
    if out_dir.exists() and not out_dir.is_dir():
        raise EvalError(f"--out {out_dir} exists and is not a folder")
    previous = read_eval(out_dir) if out_dir.is_dir() else None
    c, s = int(images.shape[1]), int(images.shape[2])
    data_cfg = DataConfig(name=dataset, data_dir=None if data_dir is None else str(Path(data_dir).expanduser()),
                          image_size=s, channels=c)
    cache = Path(cache_dir) if cache_dir is not None else None
    t = time.perf_counter()
    data = load_images(data_cfg, cache_dir=cache)
    load_s = time.perf_counter() - t
    opts = ImageEvalOptions(metrics=metrics, n=n or int(images.shape[0]), device=device, cache_dir=cache,
                            progress=progress, **_pick(ImageEvalOptions, options))
    report = evaluate_images(data, data_cfg, opts, samples=images)
    report.timings = {"load_data": round(load_s, 4), **report.timings}
    h = hashlib.sha256(json.dumps(list(images.shape)).encode())
    h.update(images.contiguous().numpy().tobytes())
    subject = {"kind": "samples", "path": str(src.resolve()), "name": src.resolve().name.split(".")[0],
               "family": "samples", "samples_sha256": h.hexdigest()}
    shown = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items() if k != "progress"}
    record = _record(report, subject, {**shown, "dataset": dataset}, previous, time.perf_counter() - t0)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_grid(images[:64], out_dir / "samples.png", metadata={"source": str(src.resolve()), "n": len(images)})
    json_path, md_path = _write(out_dir, record)
    return EvalOutcome(record, json_path, md_path, report)


# --------------------------------------------------------------------------- samples files


def _from_array(a: np.ndarray, what: str) -> Tensor:
    """A numpy array of images → uint8 [N, C, H, W]; see :func:`load_samples` for the accepted layouts."""
    if a.dtype == object or a.dtype.kind not in "uifb":
        raise EvalError(f"{what}: expected a numeric array of images, got dtype {a.dtype}")
    if a.ndim == 3:
        a = a[:, None]  # [N, H, W] → [N, 1, H, W]
    elif a.ndim == 4:
        first, last = a.shape[1] in (1, 3, 4), a.shape[3] in (1, 3, 4)
        nchw = first and a.shape[2] == a.shape[3]
        nhwc = last and a.shape[1] == a.shape[2]
        if nchw and nhwc and a.shape[1] != a.shape[3]:
            raise EvalError(f"{what}: shape {list(a.shape)} is ambiguous between [N, C, H, W] and [N, H, W, C]")
        if nhwc and not nchw:
            a = a.transpose(0, 3, 1, 2)
        elif not nchw:
            raise EvalError(f"{what}: shape {list(a.shape)} is not [N, H, W], [N, H, W, C] or [N, C, H, W] "
                            f"with C in 1, 3, 4 and square images")
    else:
        raise EvalError(f"{what}: expected images [N, H, W], [N, H, W, C] or [N, C, H, W], got shape "
                        f"{list(a.shape)}")
    if a.shape[0] < 2:
        raise EvalError(f"{what}: holds {a.shape[0]} image(s); an evaluation needs at least 2")
    if a.shape[2] != a.shape[3]:
        raise EvalError(f"{what}: images are {a.shape[2]}x{a.shape[3]}; only square images are supported")
    if a.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(a))
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise EvalError(f"{what}: float images contain NaN or inf")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise EvalError(f"{what}: float images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
                            f"map [-1, 1] images with (x + 1) / 2, or save uint8")
        return torch.from_numpy(np.ascontiguousarray(np.rint(a.astype(np.float64) * 255.0).astype(np.uint8)))
    lo, hi = int(a.min()), int(a.max())  # other integer (or bool) arrays: accepted when they hold 0..255
    if lo < 0 or hi > 255:
        raise EvalError(f"{what}: integer images must hold values in 0..255, got {lo}..{hi}")
    return torch.from_numpy(np.ascontiguousarray(a.astype(np.uint8)))


NPZ_KEYS = ("samples", "images", "x", "arr_0")  # looked up in this order when an .npz holds several arrays


def load_samples(path: str | Path) -> Tensor:
    """Images made by any tool, as uint8 ``[N, C, H, W]``.

    Accepted:

    - ``.npy``: one array; ``.npz``: its only array, or the first of ``samples``,
      ``images``, ``x``, ``arr_0`` (read without pickle).
    - Layouts ``[N, H, W]`` (grey), ``[N, H, W, C]`` and ``[N, C, H, W]`` with C in
      1, 3, 4 and square images: channels-last is recognised by a last axis of
      size 1/3/4 with equal axes 1 and 2, channels-first by an axis 1 of size
      1/3/4 with equal axes 2 and 3 (a shape matching both differently is refused).
    - dtypes: uint8 as is; floats in ``[0, 1]`` (rounded to 8 bits); other integers
      holding 0..255.
    - A folder of PNG/JPEG/BMP/WebP images of one square size (class sub-folders allowed;
      labels are ignored).

    Raises:
        EvalError: a missing file, another format, a bad shape or value range.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise EvalError(f"samples {p} not found")
    if p.is_dir():
        from genforge.data.imagefolder import load_imagefolder

        d = load_imagefolder(DataConfig(name=f"imagefolder:{p}", test_fraction=0.5))
        return torch.cat([d.train_x, d.test_x]).contiguous()
    if p.suffix == ".npy":
        try:
            a = np.load(p, allow_pickle=False)
        except ValueError as e:
            raise EvalError(f"{p} is not a plain .npy array ({e})") from None
        return _from_array(a, str(p))
    if p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                names = list(z.files)
                key = names[0] if len(names) == 1 else next((k for k in NPZ_KEYS if k in names), None)
                if key is None:
                    raise EvalError(f"{p} holds arrays {names}; name the images one of {', '.join(NPZ_KEYS)}")
                a = z[key]
        except ValueError as e:
            raise EvalError(f"{p} is not a plain .npz archive ({e})") from None
        return _from_array(a, f"{p}[{key}]")
    raise EvalError(f"samples {p}: expected a .npy or .npz file of images, or a folder of image files")


# --------------------------------------------------------------------------- tables


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


def metrics_for(run_dir: str | Path) -> tuple[str, ...]:
    """The metric names ``--metrics`` accepts for this run (image or text)."""
    return TEXT_METRICS if (Path(run_dir) / "tokenizer.json").is_file() else IMAGE_METRICS
