"""``genforge eval --samples``: score images made by any tool against a dataset, with the same protocol as runs.

    >>> out = evaluate_samples("gen.npz", dataset="mnist", data_dir="./mnist")
    >>> print(format_table(out.record))

Runs are evaluated by :func:`genforge.tasks.evaluate.evaluate_run`; both write
the record of :mod:`genforge.evaluation.record`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from genforge.config import DataConfig
from genforge.data import DataError, is_text_dataset, load_images
from genforge.data.samples import load_samples
from genforge.evaluation.images import ImageEvalOptions, evaluate_images
from genforge.evaluation.protocol import EvalError
from genforge.evaluation.record import (EVAL_FORMAT, EvalOutcome, build_record, commit_record, format_markdown,
                                        format_table, read_eval)
from genforge.evaluation.reference import images_sha256
from genforge.rundir import RunDir
from genforge.sampling.images import save_grid
from genforge.sampling.options import pick_fields

__all__ = ["EVAL_FORMAT", "EvalOutcome", "evaluate_samples", "format_markdown", "format_table", "load_samples",
           "read_eval"]


def evaluate_samples(path: str | Path, *, dataset: str, data_dir: str | Path | None = None,
                     out: str | Path | None = None, metrics: tuple[str, ...] | None = None, n: int | None = None,
                     device: str = "cpu", cache_dir: str | Path | None = None, progress: bool = False,
                     verify: bool = True, **options: Any) -> EvalOutcome:
    """Evaluate images made by any tool (see :func:`load_samples`) against ``dataset``.

    The reference is the dataset at the samples' size and channels (resized and
    converted exactly as training data would be). Writes ``eval.json``, ``eval.md``
    and a 64-image samples grid (for ``genforge compare``) into ``out``,
    by default the folder ``<stem>-eval`` beside the samples.

    Args:
        n: images per side (default: all samples; more samples than ``n`` are subsampled with the seed).
        options: fields of :class:`ImageEvalOptions`.
    """
    t0 = time.perf_counter()
    src = Path(path).expanduser()
    if is_text_dataset(dataset):
        raise EvalError(f"--samples takes images; {dataset!r} is a text dataset")
    try:
        images = load_samples(src)
    except DataError as e:
        raise EvalError(str(e)) from None
    out_dir = Path(out) if out is not None else src.resolve().parent / f"{src.resolve().name.split('.')[0]}-eval"
    if out_dir.exists() and not out_dir.is_dir():
        raise EvalError(f"--out {out_dir} exists and is not a folder")
    if RunDir(out_dir).config.is_file():
        raise EvalError(f"--out {out_dir} is a training run; `eval --samples` writes a folder of its own "
                        f"(eval.json, eval.md, samples.png), so choose another --out")
    if out_dir.is_dir():
        read_eval(out_dir)  # a damaged eval.json is reported before any work
    c, s = int(images.shape[1]), int(images.shape[2])
    data_cfg = DataConfig(name=dataset, data_dir=None if data_dir is None else str(Path(data_dir).expanduser()),
                          image_size=s, channels=c, verify=verify)
    cache = Path(cache_dir) if cache_dir is not None else None
    t = time.perf_counter()
    data = load_images(data_cfg, cache_dir=cache)
    load_s = time.perf_counter() - t
    opts = ImageEvalOptions(metrics=metrics, n=n or int(images.shape[0]), device=device, cache_dir=cache,
                            progress=progress, **pick_fields(ImageEvalOptions, options))
    report = evaluate_images(data, data_cfg, opts, samples=images)
    report.timings = {"load_data": round(load_s, 4), **report.timings}
    subject = {"kind": "samples", "path": str(src.resolve()), "name": src.resolve().name.split(".")[0],
               "family": "samples", "samples_sha256": images_sha256(images)}
    shown = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items() if k != "progress"}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_grid(images[:64], RunDir(out_dir).samples("image"), metadata={"source": str(src.resolve()), "n": len(images)})
    record, json_path, md_path = commit_record(  # merged with eval.json as it is now, under the folder's eval lock
        out_dir, lambda previous: build_record(report, subject, {**shown, "dataset": dataset}, previous,
                                               time.perf_counter() - t0))
    return EvalOutcome(record, json_path, md_path, report)


