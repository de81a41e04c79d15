"""Hyperparameter search over ``--set`` keys with Optuna (the body of ``genforge tune``).

A search space maps recipe keys (``train.lr``, ``model.n_embd``) to distributions.
Each trial is an ordinary run directory ``STUDY_DIR/trials/trial-NNNN`` trained by
:func:`genforge.training.run.train`; intermediate evaluations feed Optuna's pruner
through the trainer's ``on_eval`` hook. Several workers running the same command on
one storage share the study and finish N trials between them. At the end each worker
writes ``results.csv``, ``results.md``, ``best.yaml``, the plots and the trials'
leaderboard (``leaderboard.md``/``.html``, as ``genforge compare STUDY_DIR`` writes it)
into STUDY_DIR.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from genforge.config import ConfigError, apply_overrides, dump_yaml, load_yaml
from genforge.evaluation.compare import compare_runs
from genforge.io import atomic_path, atomic_write_text, remove_stale
from genforge.rundir import LOG_BOOKKEEPING, TRIALS_DIR, study_trials
from genforge.training.logger import read_metrics
from genforge.training.run import load_recipe, resolve, train
from genforge.training.study import HEARTBEAT_S, SURPLUS, open_study, work

__all__ = ["TuneOutcome", "load_space", "metric_key", "tune"]

TYPES = ("float", "int", "categorical")
FIELDS = {"type", "low", "high", "log", "step", "choices"}


@dataclass
class TuneOutcome:
    study_dir: Path
    study: Any  # optuna.Study
    ran: int  # trials this worker trained
    notes: list[str] = field(default_factory=list)


def _check_spec(key: str, spec: Any) -> None:
    """One distribution's fields; a bad one raises ConfigError naming the key."""
    if not isinstance(spec, dict):
        raise ConfigError(f"space {key!r}: expected a mapping like {{type: float, low: 0.1, high: 1}}")
    unknown = sorted(set(spec) - FIELDS)
    if unknown:
        raise ConfigError(f"space {key!r}: unknown field(s) {unknown}; valid: {sorted(FIELDS)}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise ConfigError(f"space {key!r}: type must be one of {list(TYPES)}, got {kind!r}")
    if kind == "categorical":
        if not isinstance(spec.get("choices"), list) or not spec["choices"]:
            raise ConfigError(f"space {key!r}: categorical needs a non-empty list of choices")
        return
    low, high = spec.get("low"), spec.get("high")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
        raise ConfigError(f"space {key!r}: {kind} needs numeric low and high, got {low!r} and {high!r}")
    if low >= high:
        raise ConfigError(f"space {key!r}: empty range (low {low} >= high {high})")
    if spec.get("log") and low <= 0:
        raise ConfigError(f"space {key!r}: log needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None and (spec.get("log") or not isinstance(step, (int, float)) or step <= 0):
        raise ConfigError(f"space {key!r}: step must be a positive number without log, got {step!r}")


def _example(spec: dict[str, Any]) -> Any:
    """A value the distribution can suggest (to check that the recipe accepts the key)."""
    if spec["type"] == "categorical":
        return spec["choices"][0]
    return int(spec["low"]) if spec["type"] == "int" else float(spec["low"])


def override(key: str, value: Any) -> str:
    """``key=value`` whose value reads back as the same YAML scalar (``1.0e-05``, not the string ``1e-05``)."""
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return f"{key}={text.removesuffix('...').strip()}"


def load_space(path: str | Path, raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Read and validate a space YAML against the (overridden) raw recipe; errors are one ConfigError line."""
    path = Path(path)
    try:
        space = load_yaml(path)
    except ConfigError as e:
        raise ConfigError(f"--space: {e}") from None
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"--space {path} must map recipe keys (e.g. train.lr) to distributions")
    for key, spec in space.items():
        _check_spec(str(key), spec)
        try:
            resolve(apply_overrides(raw, [override(str(key), _example(spec))]))
        except ConfigError as e:
            raise ConfigError(f"space {key!r}: {e}") from None
    return {str(k): v for k, v in space.items()}


def metric_key(metric: str, keys: Iterable[str]) -> str | None:
    """The key among ``keys`` (one evaluation's) that ``--metric`` names, or None.

    ``val/loss`` and ``eval/val/loss`` both name ``val/loss``; ``eval/fid`` (or ``fid``) names the proxy FID
    ``eval/fid@<n>`` when exactly one such key is there.
    """
    keys = list(keys)
    names = [metric, metric.removeprefix("eval/"), f"eval/{metric}"]
    exact = next((n for n in names if n in keys), None)
    if exact is not None:
        return exact
    sized = [k for k in keys if any(k.startswith(f"{n}@") for n in names)]
    return sized[0] if len(sized) == 1 else None


def _suggest(trial: Any, key: str, spec: dict[str, Any]) -> Any:
    if spec["type"] == "categorical":
        return trial.suggest_categorical(key, spec["choices"])
    kw = {"log": bool(spec.get("log", False))}
    if spec.get("step") is not None:
        kw["step"] = spec["step"]
    if spec["type"] == "int":
        return trial.suggest_int(key, int(spec["low"]), int(spec["high"]), **kw)
    return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), **kw)


def final_value(run_dir: Path, metric: str) -> float:
    """``metric`` in the run's last evaluation record that has it; one that none has is a ConfigError."""
    records = read_metrics(run_dir)
    for r in reversed(records):
        key = metric_key(metric, r)
        if key is not None and isinstance(r[key], (int, float)):
            return float(r[key])
    known = sorted({k for r in records if "eval_s" in r for k in r} - LOG_BOOKKEEPING)
    raise ConfigError(f"--metric {metric!r} is not written by this recipe's evaluation; its metrics: {known}")


def _run_trial(trial: Any, space: dict, metric: str, base: Sequence[str], train_kwargs: dict, run_dir: Path) -> float:
    """Train one trial; raises optuna.TrialPruned when the pruner stopped it."""
    import optuna

    params = [override(k, _suggest(trial, k, spec)) for k, spec in space.items()]
    trial.set_user_attr("run_dir", str(run_dir))

    def on_eval(step: int, metrics: dict[str, float]) -> bool:
        key = metric_key(metric, metrics)
        value = metrics.get(key) if key is not None else None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        trial.report(float(value), step)
        return trial.should_prune()

    outcome = train(**train_kwargs, overrides=[*base, *params], out=run_dir, progress=False, on_eval=on_eval)
    value = final_value(outcome.run_dir, metric)
    if outcome.result.stopped == "stopped_by_hook":
        raise optuna.TrialPruned(f"pruned at step {outcome.result.step}")
    return value


def _rows(study: Any) -> list[dict[str, Any]]:
    """Every trial but surplus ones, best first: completed by value, then pruned, then the rest."""
    sign = -1 if study.direction.name == "MAXIMIZE" else 1
    order = {"COMPLETE": 0, "PRUNED": 1}
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(SURPLUS)]
    trials.sort(key=lambda t: (order.get(t.state.name, 2), sign * t.value if t.value is not None else math.inf,
                               t.number))
    return [{"number": t.number, "state": t.state.name, "value": t.value,
             "params": "; ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items()),
             "run_dir": t.user_attrs.get("run_dir", "")} for t in trials]


def _write_tables(study: Any, study_dir: Path) -> None:
    rows = _rows(study)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["number", "state", "value", "params", "run_dir"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(study_dir / "results.csv", buf.getvalue())
    lines = [f"# Study {study.study_name} ({study.direction.name.lower()})", "",
             "| trial | state | value | params | run dir |", "|---|---|---|---|---|"]
    for r in rows:
        value = "" if r["value"] is None else f"{r['value']:.6g}"
        lines.append(f"| {r['number']} | {r['state']} | {value} | {r['params']} | {r['run_dir']} |")
    atomic_write_text(study_dir / "results.md", "\n".join(lines) + "\n")


def _save_plot(ax: Any, title: str, path: Path) -> None:
    """Retitle one of Optuna's plots (its own title may sit left or centre) and write it atomically."""
    for loc in ("left", "center", "right"):
        ax.set_title("", loc=loc)
    ax.set_title(title, loc="left")
    fig = ax.figure
    fig.set_size_inches(8, 5)
    fig.tight_layout()
    with atomic_path(path) as tmp:  # .NAME.PID_….tmp: a killed tune's is removed by the next (remove_stale)
        fig.savefig(tmp, dpi=100, format="png")
    __import__("matplotlib.pyplot").pyplot.close(fig)


def _write_plots(study: Any, study_dir: Path, n_params: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    from optuna.trial import TrialState
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    notes = []
    completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    pruned = len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
    # optuna switches matplotlib to its own style sheet; rc_context puts the caller's back afterwards
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        _save_plot(plot_optimization_history(study),
                   f"Optimisation history: {completed} completed trials ({pruned} pruned, not drawn)",
                   study_dir / "history.png")
        if completed >= 2 and n_params >= 1:
            _save_plot(plot_param_importances(study),
                       f"Parameter importances (fANOVA over {completed} completed trials)",
                       study_dir / "importances.png")
        else:
            notes.append(f"importances.png skipped: needs >= 2 completed trials and >= 1 param "
                         f"(have {completed} and {n_params})")
    return notes


def _write_best(study: Any, study_dir: Path, base: Sequence[str], train_kwargs: dict) -> list[str]:
    """``best.yaml``: the recipe with the best trial's params applied (``genforge train --config best.yaml``)."""
    try:
        best = study.best_trial
    except ValueError:
        return ["best.yaml skipped: no completed trial yet"]
    params = [override(k, v) for k, v in best.params.items()]
    raw, _ = load_recipe(train_kwargs.get("recipe"), config_file=train_kwargs.get("config_file"),
                         overrides=[*base, *params], data_dir=train_kwargs.get("data_dir"))
    with atomic_path(study_dir / "best.yaml") as tmp:
        dump_yaml(raw, tmp)
    return []


def tune(recipe: str | None = None, *, space: str | Path, n_trials: int, metric: str,
         config_file: str | Path | None = None, overrides: Sequence[str] = (), data_dir: str | Path | None = None,
         storage: str | None = None, study_name: str | None = None, out: str | Path | None = None,
         direction: str = "minimize", prune: bool = True, heartbeat_s: int = HEARTBEAT_S) -> TuneOutcome:
    """Run (this worker's share of) a study of ``n_trials`` trials and write its reports.

    Args:
        recipe / config_file / overrides / data_dir: the base recipe, as for ``genforge train``.
        space: YAML file mapping recipe keys to ``{type, low, high, log, step, choices}``.
        metric: the evaluation key to optimise (``val/loss``, ``eval/val/loss``, ``eval/fid`` for ``eval/fid@<n>``).
        storage: Optuna storage URL; default ``sqlite:///STUDY_DIR/study.db``.
        study_name: default the recipe's name; out: STUDY_DIR, default ``studies/<study>``.
        prune: stop a trial whose intermediate value is worse than the median of earlier trials at that step
            (Optuna's MedianPruner, once 2 trials have finished); False runs every trial to the end.
        heartbeat_s: how often a running trial is recorded alive; a trial silent for ``GRACE`` times that (its
            worker was killed) is failed by the next worker that asks for a trial, and its slot run again.
    """
    if n_trials < 1 or direction not in ("minimize", "maximize") or heartbeat_s < 1:
        raise ConfigError(f"need --trials >= 1, --direction minimize|maximize and --heartbeat >= 1, got {n_trials}, "
                          f"{direction!r}, {heartbeat_s}")
    raw, name = load_recipe(recipe, config_file=config_file, overrides=overrides, data_dir=data_dir)
    resolve(raw)
    dists = load_space(space, raw)
    study_name = study_name or name
    study_dir = Path(out) if out is not None else Path("studies") / study_name
    (study_dir / TRIALS_DIR).mkdir(parents=True, exist_ok=True)
    remove_stale(study_dir)  # the half-written reports of a killed worker (a live worker's stay)
    study = open_study(study_name, storage or f"sqlite:///{study_dir.resolve() / 'study.db'}", direction, prune,
                        heartbeat_s)
    train_kwargs = {"recipe": recipe, "config_file": config_file, "data_dir": data_dir}

    def run_one(trial: Any) -> float:
        run_dir = study_dir / TRIALS_DIR / f"trial-{trial.number:04d}"
        return _run_trial(trial, dists, metric, list(overrides), train_kwargs, run_dir)

    ran, notes = work(study, n_trials, run_one)
    _write_tables(study, study_dir)
    notes += _write_best(study, study_dir, list(overrides), train_kwargs)
    notes += _write_plots(study, study_dir, len(dists))
    if study_trials(study_dir):
        compare_runs([study_dir], out=study_dir, overwrite=True)  # the trials' curves side by side
    return TuneOutcome(study_dir, study, ran, notes)
