"""``genforge eval RUN``: evaluate a run with its task's metrics and write ``eval.json`` / ``eval.md`` into it.

    >>> out = evaluate_run("runs/mnist-dcgan", n=10_000)     # the run's recorded task picks the metrics
    >>> print(format_table(out.record))

The run is opened once as its task's sampling pipeline (the same object
``genforge sample`` uses); the task loads the data and runs its evaluation.
Writing never destroys anything: the evaluation runs to completion before any
file is touched; ``eval.json`` and ``eval.md`` are then each replaced
atomically, and earlier results of the same weights survive in ``history``
(:mod:`genforge.evaluation.record`). Merging and writing happen under the run's eval lock
(``.eval.lock``), so two evals of one run at once both keep their results; what a killed
eval left (temporaries, an eval.md behind eval.json) is repaired when the next one starts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from genforge.config import DataConfig, from_dict
from genforge.data.download import file_digest
from genforge.evaluation.protocol import EvalError
from genforge.evaluation.record import (EvalOutcome, build_record, commit_record, eval_lock, last_step, read_eval,
                                        repair_eval)
from genforge.rundir import RunDir, RunDirError
from genforge.tasks import get_task

__all__ = ["evaluate_run", "metrics_for"]


def _data_config(raw: dict[str, Any], data_dir: str | Path | None, verify: bool) -> DataConfig:
    data_raw = raw.get("data") or {}
    if not isinstance(data_raw, dict):
        raise EvalError(f"the run's config.yaml has a data section that is not a mapping: {data_raw!r}")
    data_raw = dict(data_raw)
    if data_dir is not None:
        data_raw["data_dir"] = str(Path(data_dir).expanduser().resolve())
    if not verify:
        data_raw["verify"] = False
    return from_dict(DataConfig, data_raw, prefix="data")


def evaluate_run(run_dir: str | Path, *, metrics: tuple[str, ...] | None = None, data_dir: str | Path | None = None,
                 device: str = "cpu", cache_dir: str | Path | None = None, progress: bool = False,
                 verify: bool = True, **options: Any) -> EvalOutcome:
    """Evaluate a run directory with the metrics of its task and write its eval files.

    Args:
        run_dir: written by ``genforge train``.
        metrics: metric names of the run's task (``IMAGE_METRICS`` or ``TEXT_METRICS``); None = all that apply.
        data_dir: read the dataset from here instead of the path in ``config.yaml`` / the cache.
        device: where the model (and the image extractor) run.
        cache_dir: genforge cache root (evaluators, reference features, token ids).
        verify: check ``data_dir`` files against the dataset's known checksums.
        options: fields of the task's options (:class:`ImageEvalOptions` or :class:`TextEvalOptions`);
            those that do not apply to the run's task, and None values, are ignored.

    Raises:
        EvalError: not a run directory, bad options; plus the errors of the evaluators and metrics.
    """
    t0 = time.perf_counter()
    run = RunDir(run_dir)
    try:
        run.require()
    except RunDirError as e:
        raise EvalError(f"{e}; evaluate a file of images with --samples FILE --dataset NAME instead") from None
    with eval_lock(run.path):  # leftovers of a killed eval go first
        repair_eval(run.path)
    read_eval(run.path)  # a damaged eval.json is reported before any work
    raw = run.read_config()
    task = get_task(run.task(raw))
    data_cfg = _data_config(raw, data_dir, verify)
    cache = Path(cache_dir) if cache_dir is not None else None
    opts = task.eval_options(metrics=metrics, device=device, cache_dir=cache, progress=progress, options=options)
    subject = {"kind": "run", "path": str(run.path.resolve()), "name": run.path.resolve().name,
               "family": run.family(raw), "step": last_step(run.path), "weights_sha256": file_digest(run.weights)}
    t = time.perf_counter()
    data = task.load_data(data_cfg, cache_dir=cache, progress=progress)
    load_s = time.perf_counter() - t
    pipeline = task.open(run.path, device=device)
    report = task.evaluate(pipeline, data, data_cfg, opts)
    report.timings = {"load_data": round(load_s, 4), **report.timings}
    shown = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items() if k != "progress"}
    record, json_path, md_path = commit_record(  # merged with eval.json as it is now, under the run's eval lock
        run.path, lambda previous: build_record(report, subject, {**shown, "device": device}, previous,
                                                time.perf_counter() - t0))
    return EvalOutcome(record, json_path, md_path, report)


def metrics_for(run_dir: str | Path) -> tuple[str, ...]:
    """The metric names ``--metrics`` accepts for this run (those of its recorded task)."""
    return get_task(RunDir(run_dir).task()).metrics
