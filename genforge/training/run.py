"""From a recipe to a finished run directory: resolve, validate, load data, build, train.

One flow for every task (``genforge.tasks``): the task loads and batches the
data, fits the model config to it, supplies the evaluation hook and writes the
periodic samples through its sampling pipeline. Every check that can fail
(config keys and types, sample options, data, run directory) runs before
anything is written, and nothing that exists is ever overwritten: a new run
refuses an existing non-empty directory, and ``resume`` only appends. The
layout of a run directory is :mod:`genforge.rundir`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from genforge.config import (DEFAULT_RECIPE, ConfigError, RunConfig, apply_overrides, load_yaml, recipe_path,
                             resolve_run_config, to_dict)
from genforge.io import atomic_copy, atomic_write_text
from genforge.models import FAMILIES, GenerativeModel, build, config_class, load_parents
from genforge.rundir import (LOCK, RESTARTABLE, SAMPLE_SUFFIX, TOKENIZER, WEIGHTS, RunDir, RunDirError, RunLock,
                             resolve_parents)
from genforge.sampling.options import as_dict
from genforge.tasks import Task, get_task
from genforge.training.chain import PARENTS_DIR, parent_recipes, train_parent_recipes
from genforge.training.checkpoint import latest_checkpoint, remove_stale_temporaries, seed_everything
from genforge.training.trackers import check_installed, open_trackers
from genforge.training.distributed import World, broadcast, local_device, setup, teardown, world_from_env
from genforge.training.precision import resolve_device
from genforge.training.trainer import EvalReport, Trainer, TrainResult

__all__ = ["RunDirError", "TrainOutcome", "load_recipe", "resolve", "train"]


@dataclass
class TrainOutcome:
    run_dir: Path
    config: RunConfig
    model: GenerativeModel  # the sampling model (EMA weights when enabled)
    result: TrainResult


def load_recipe(recipe: str | None = None, *, config_file: str | Path | None = None,
                overrides: Sequence[str] = (), data_dir: str | Path | None = None) -> tuple[dict[str, Any], str]:
    """Raw recipe mapping with overrides applied, and a short name for the run.

    ``recipe`` names a shipped recipe; ``config_file`` is the user's own YAML
    (the two are exclusive); neither means the default recipe.
    """
    if recipe and config_file:
        raise ConfigError("give either a recipe name or --config FILE, not both")
    if config_file:
        path, name = Path(config_file), Path(config_file).stem
    else:
        name = recipe or DEFAULT_RECIPE
        path = recipe_path(name)
    return _apply_cli(load_yaml(path), overrides, data_dir), name


def _apply_cli(raw: dict[str, Any], overrides: Sequence[str], data_dir: str | Path | None) -> dict[str, Any]:
    """``--set`` overrides, then ``--data-dir`` (which wins over ``data.data_dir``)."""
    raw = apply_overrides(raw, list(overrides))
    if data_dir is not None:
        raw.setdefault("data", {})["data_dir"] = str(data_dir)
    return raw


def resolve(raw: dict[str, Any]) -> RunConfig:
    """Strictly validate a raw recipe into a :class:`RunConfig` with its task and sample settings resolved.

    The task comes from the model family (``ImageModelConfig.task``); a recipe's explicit
    ``task`` must agree. The ``sample`` section is validated by the task's sampling
    pipeline against the family's sample options and written back complete.
    """
    cfg = resolve_run_config(raw, config_class)
    if cfg.data.data_dir is not None:
        cfg.data.data_dir = str(Path(cfg.data.data_dir).expanduser().resolve())
    family_task = type(cfg.model).task
    if cfg.task and cfg.task != family_task:
        raise ConfigError(f"task: {cfg.task!r} but model.family={cfg.model.family!r} is a {family_task} family")
    cfg.task = family_task
    family = FAMILIES[cfg.model.family]
    roles, optional = family.parent_roles, family.optional_parent_roles
    if not set(roles) <= set(cfg.parents) <= set(roles) | set(optional):
        wants = ", ".join(f"{r}: RUN_DIR" for r in roles) or "nothing"
        may = f" (and may stand on {', '.join(optional)})" if optional else ""
        raise ConfigError(f"model.family={cfg.model.family!r} stands on parents {{{wants}}}{may}; the recipe names "
                          f"{sorted(cfg.parents) or 'none'}", key="parents")
    cfg.parents = resolve_parents(cfg.parents)  # path + sha256 of each parent's weights, checked now
    task = get_task(family_task)
    task.check(cfg)
    request, options = task.parse_sample(FAMILIES[cfg.model.family].sample_options, cfg.sample)
    cfg.sample = as_dict(request, options)
    return cfg


def _default_run_dir(name: str) -> Path:
    """``runs/<name>-<timestamp>``, made unique with a suffix."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path("runs") / f"{name}-{stamp}"
    i = 1
    while run_dir.exists():
        i += 1
        run_dir = Path("runs") / f"{name}-{stamp}-{i}"
    return run_dir


def _never_trained(run: RunDir) -> bool:
    """Whether ``run`` is a genforge run that never wrote a checkpoint: only files of ``RESTARTABLE`` (the
    step-0 weights, a metric log, samples) and no best model, so nothing trained would be lost."""
    entries = {p.name for p in run.path.iterdir() if not p.name.startswith(".") or p.name == LOCK} - {PARENTS_DIR}
    if not run.config.is_file() or not entries <= RESTARTABLE:
        return False
    try:
        if "genforge_version" not in run.read_config():
            return False
    except RunDirError:
        return False
    return not run.checkpoints.is_dir() or not any(run.checkpoints.iterdir())


def _clear_leftovers(run: RunDir) -> None:
    """Remove what a run that never checkpointed left (see :func:`_never_trained`); other files stay."""
    import shutil

    for p in list(run.path.iterdir()):
        if p.name == LOCK or p.name not in RESTARTABLE:
            continue
        if p.name == "samples" and p.is_dir():
            for f in p.iterdir():
                if f.name.startswith("step-") and f.suffix in SAMPLE_SUFFIX.values():
                    f.unlink()
            if not any(p.iterdir()):
                p.rmdir()
        elif p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def _decide(run: RunDir, resume: bool) -> tuple[bool, str]:
    """How a training may start in ``run``, without changing anything: (resume from a checkpoint?, what
    to clear first: ``""`` nothing, ``"restart"`` a run that never checkpointed, ``"from-zero"`` the same
    for ``--resume``). Raises ``RunDirError`` when the directory must not be used.

    A new run needs an empty directory (hidden files such as the lock do not count), or one that
    :func:`_never_trained`; ``--resume`` needs a checkpoint, or a run that never wrote one.
    """
    if not run.path.exists():
        return False, ""
    if resume and latest_checkpoint(run.path) is not None:
        return True, ""
    if resume:
        if not _never_trained(run):
            raise RunDirError(f"--resume: no checkpoint in {run.checkpoints}, and {run.path} holds more than a run "
                              f"that never checkpointed; nothing was changed")
        return False, "from-zero"
    if not [p for p in run.path.iterdir() if not p.name.startswith(".") and p.name != PARENTS_DIR]:
        return False, ""  # new, or only the parent runs a chain trained for it
    if _never_trained(run):
        return False, "restart"
    raise RunDirError(f"run directory {run.path} already exists and is not empty; pass --resume to continue "
                      f"it, or choose another --out (nothing was changed)")


def _prepare(run: RunDir, resume: bool) -> bool:
    """Under the run's lock: decide again (see :func:`_decide`), clear what a failed run left, and remove
    leftovers of writes a killed process never finished; returns whether to resume from a checkpoint."""
    import sys

    def say(msg: str) -> None:
        print(f"genforge: {msg}", file=sys.stderr, flush=True)

    resuming, clear = _decide(run, resume)
    if clear == "from-zero":
        say(f"{run.path} has no checkpoint: starting it from step 0 with its own config")
    elif clear == "restart":
        say(f"restarting {run.path} in place: it holds no checkpoint (nothing trained is lost)")
    if clear:
        _clear_leftovers(run)
    removed = remove_stale_temporaries(run.path)
    if removed:
        say(f"removed {len(removed)} temporary file(s) left by an interrupted write in {run.path}")
    return resuming


def _resume_raw(run_dir: Path, overrides: Sequence[str], data_dir: str | Path | None) -> dict[str, Any]:
    """The run's own config (upgraded from older formats by ``rundir``) with the CLI's changes applied."""
    run = RunDir(run_dir)
    if not run.config.is_file():
        if (run.path / PARENTS_DIR).is_dir():
            raise RunDirError(f"--resume: {run_dir} holds only the parent runs of a chain, not yet the run itself: "
                              f"run the same command without --resume (with the recipe) to continue the chain")
        raise RunDirError(f"--resume: {run_dir} is not a genforge run (no {run.config.name})")
    raw = run.read_config()
    raw.pop("genforge_version", None)
    new = _apply_cli(raw, overrides, data_dir)
    if latest_checkpoint(run.path) is None:  # nothing trained yet: the run starts again from step 0
        return new
    missing = [s for s in _RECORDED if not isinstance(raw.get(s), dict)]
    if missing:  # weights trained with settings no longer known must not go on with defaults
        raise ConfigError(f"--resume: {run.config} has no {missing[0]}: section (edited by hand?); a run continues "
                          f"with the settings it was trained with, never defaults: restore it", key=missing[0])
    for section in ("model", "data"):
        was, now = raw[section], new.get(section)
        now = now if isinstance(now, dict) else {}
        changed = [k for k in {**was, **now} if k not in _MAY_CHANGE and was.get(k) != now.get(k)]
        if changed:
            key, had = f"{section}.{changed[0]}", repr(was.get(changed[0]))[:80]
            raise ConfigError(f"--resume cannot change {key} (the run has {had}): its weights and tokenizer were "
                              f"made with it; start a new run with --out instead", key=key)
    return new


_RECORDED = ("model", "data", "train")  # sections a run's config.yaml must hold to be resumed
_MAY_CHANGE = frozenset({"data_dir", "verify"})  # where the same data is read from, and whether it is checked


def _check_resumable(cfg: RunConfig, run: RunDir, data: Any) -> None:
    """Before resuming: the run's own tokenizer is the one the data gives (a run's tokenizer never changes),
    and the model ``config.yaml`` describes has the shapes of the checkpointed weights."""
    own = run.tokenizer
    tokenizer = getattr(data, "tokenizer", None)
    if tokenizer is not None and own.is_file():
        from genforge.data import load_tokenizer

        if load_tokenizer(own) != tokenizer:
            raise ConfigError(f"--resume: {cfg.data.name} now gives a tokenizer other than the run's {own} (did "
                              f"the corpus change?); a run keeps its tokenizer: restore the corpus or start a new run")
    mismatch = _weights_mismatch(cfg, run)
    if mismatch:
        raise ConfigError(f"--resume: {run.config} no longer matches the run's checkpoints ({mismatch}); was its "
                          f"model: section edited? restore it, or start a new run with --out", key="model")


def _weights_mismatch(cfg: RunConfig, run: RunDir) -> str:
    """How the weights the config builds differ from the newest readable checkpoint's; "" when they agree
    (or cannot be compared: a family that needs its parents to build, no readable checkpoint)."""
    import torch
    from safetensors import safe_open

    from genforge.training.checkpoint import list_checkpoints

    try:
        with torch.device("meta"):
            model = FAMILIES[cfg.model.family](cfg.model)
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    except Exception:
        return ""
    for _, folder in reversed(list_checkpoints(run.path)):
        try:
            with safe_open(str(folder / WEIGHTS), "pt") as f:
                saved = {k: f.get_slice(k).get_shape() for k in f.keys()}
                aliases = set((f.metadata() or {}))  # tied weights saved once: the dropped name → the kept one
        except Exception:
            continue
        for k in shapes.keys() & saved.keys():
            if list(saved[k]) != shapes[k]:
                return f"{k} is {list(saved[k])} in {folder.name}, the config builds {shapes[k]}"
        if not cfg.parents:
            unbuilt, unsaved = sorted(saved.keys() - shapes.keys()), sorted(shapes.keys() - saved.keys() - aliases)
            if unbuilt:
                return f"{folder.name} holds {unbuilt[0]}, which the config does not build"
            if unsaved:
                return f"the config builds {unsaved[0]}, which {folder.name} lacks"
        return ""
    return ""


def train(recipe: str | None = None, *, config_file: str | Path | None = None, overrides: Sequence[str] = (),
          data_dir: str | Path | None = None, out: str | Path | None = None, resume: bool = False,
          cache_dir: str | Path | None = None, progress: bool | None = None,
          on_eval: EvalReport | None = None) -> TrainOutcome:
    """Train a recipe into a run directory (the body of ``genforge train``).

    Args:
        recipe: shipped recipe name (``genforge recipes list``); None = default.
        config_file: path of a user recipe instead of ``recipe``.
        overrides: ``"section.key=value"`` strings applied over the recipe.
        data_dir: read the dataset's files from this folder (offline).
        out: run directory; default ``runs/<recipe>-<timestamp>``.
        resume: continue ``out`` from its newest checkpoint, using its own
            ``config.yaml`` (``overrides`` may still change ``train``/``sample`` values such as
            ``train.max_steps`` and where the data is read from; never the model, the data or its tokenizer).
        progress: show the progress bar (default: the recipe's ``train.progress``).
        on_eval: called with (step, metrics) after every evaluation; True stops the run early
            (see :class:`~genforge.training.trainer.Trainer`).
    """
    if resume:
        if out is None:
            raise RunDirError("--resume needs --out RUN_DIR: the run to continue")
        if recipe or config_file:
            raise ConfigError("--resume continues RUN_DIR with its own config.yaml; "
                              "drop the recipe/--config (use --set to change values)")
        raw, name = _resume_raw(Path(out), overrides, data_dir), Path(out).name
    else:
        raw, name = load_recipe(recipe, config_file=config_file, overrides=overrides, data_dir=data_dir)
    if parent_recipes(raw):  # a chain: its parent runs are trained first, inside the run directory
        out = Path(out) if out is not None else _default_run_dir(name)
        _decide(RunDir(out), resume)  # refuse a used directory before training anything
        raw = train_parent_recipes(raw, out, data_dir=data_dir, cache_dir=cache_dir, progress=progress,
                                   multi_process=world_from_env().size > 1)
    cfg = resolve(raw)
    check_installed(cfg.train.trackers)
    world = world_from_env()  # a launcher's (torchrun) data-parallel job, or one rank
    cfg.train.device = local_device(world, cfg.train.device)
    device = resolve_device(cfg.train.device)  # a device this machine lacks fails before anything is written
    if progress is not None:
        cfg.train.progress = progress
    setup(world, device)  # joins the job's process group (nothing for one rank)
    try:
        run = RunDir(broadcast(world, str(out if out is not None else _default_run_dir(name))))
        if run.path.exists() and not run.path.is_dir():
            raise RunDirError(f"--out {run.path} is a file, not a run directory")
        if world.is_main:
            _decide(run, resume)  # refuse early: before the data is loaded or anything is created
        task, cache = get_task(cfg.task), Path(cache_dir) if cache_dir else None
        data = task.load_data(cfg.data, cache_dir=cache, progress=bool(cfg.train.progress))  # --no-progress: silent
        cfg = task.fit(cfg, data)
        if resume and world.is_main and latest_checkpoint(run.path) is not None:
            _check_resumable(cfg, run, data)
        if not world.is_main:  # rank 0 alone decides about, and writes into, the run directory
            return _fit(task, cfg, data, run, broadcast(world, None), cache, None, world)
        with RunLock(run.path):  # from here on, this process alone decides and writes
            resume = broadcast(world, _prepare(run, resume))
            return _fit(task, cfg, data, run, resume, cache, on_eval, world)
    finally:
        teardown(world)


def _artifacts(run: RunDir, task: str) -> list[Path]:
    """What a tracker keeps of a finished run: the sample grids/texts, eval and best numbers, the model."""
    model = [run.config, run.path / WEIGHTS, run.path / TOKENIZER, run.best.path]
    return [run.samples(task), run.path / "samples", run.eval_json, run.best_json, *model]


def _fit(task: Task, cfg: RunConfig, data: Any, run: RunDir, resume: bool, cache: Path | None,
         on_eval: EvalReport | None = None, world: World = World()) -> TrainOutcome:
    """The one training flow (data loaded, config fitted to it): model → batches → hooks → Trainer → samples.

    In a data-parallel job every rank builds the same model and stream; rank 0 alone writes the run.
    """
    seed_everything(cfg.train.seed)  # model init and the training noise follow train.seed
    model = build(cfg.model, load_parents(cfg.parents, child=str(run.path)))
    task.pipeline(model, data).parse(cfg.sample)  # conditions the model does not take fail before any write
    batches = task.batches(cfg, data)
    hooks = task.training_hooks(cfg, data, cache_dir=cache)
    if world.is_main:
        run.path.mkdir(parents=True, exist_ok=True)
    resolved = to_dict(cfg)

    def save_model_dir(sampling_model: GenerativeModel, directory: Path) -> None:
        sampling_model.save_pretrained(directory, run_config=resolved)
        hooks.save_extra(directory)

    def on_sample(sampling_model: GenerativeModel, step: int) -> None:
        pipe = task.pipeline(sampling_model, data, name=run.path.name)
        request, options = pipe.parse(cfg.sample)
        pipe.write(run.step_samples(step, task.name), request, options, step=step)

    def on_best(sampling_model: GenerativeModel, step: int, metrics: dict[str, float]) -> None:
        save_model_dir(sampling_model, run.best.path)
        atomic_write_text(run.best_json, json.dumps({"step": step, **metrics}, indent=1) + "\n")

    main = world.is_main
    if not resume and main:
        save_model_dir(model, run.path)  # config.yaml + initial weights: the run is loadable from the start
    t = cfg.train
    trackers = open_trackers(t.trackers, run.path, resolved, t.tracking_uri, t.experiment) if main else []
    trainer = Trainer(model, cfg.train, batches, run.path, on_sample=on_sample if main else None,
                      on_save=(lambda m: save_model_dir(m, run.path)) if main else None,
                      evaluate=hooks.evaluate if main else None, best_metric=hooks.best_metric,
                      on_best=on_best if hooks.best_metric and main else None, on_eval=on_eval,
                      examples_per_batch=hooks.examples_per_batch, unit=hooks.unit, world=world, trackers=trackers)
    status = "FAILED"
    try:
        result = trainer.fit(resume=resume)
        if main:
            atomic_copy(run.step_samples(result.step, task.name), run.samples(task.name))  # fit's final samples
        for tracker in trackers:
            tracker.log_artifacts(_artifacts(run, task.name))
        status = "FINISHED"
    finally:
        for tracker in trackers:
            tracker.close(status)
    return TrainOutcome(run.path, cfg, trainer.sampling_model, result)
