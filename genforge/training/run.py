"""From a recipe to a finished run directory: resolve, validate, load data, build, train.

Every check that can fail (config keys and types, data, run directory) runs
before anything is written, and nothing that exists is ever overwritten: a new
run refuses an existing non-empty directory, and ``resume`` only appends.

Run directory layout::

    config.yaml          resolved recipe (data/model/train/sample) + genforge_version
    model.safetensors    weights used for sampling (the EMA when train.ema_decay > 0)
    metrics.jsonl        one JSON line per log step (losses, lr, throughput)
    tb/                  TensorBoard events
    samples/step-*.png   periodic sample grids;  samples.png  the final grid
    checkpoints/step-*/  raw weights, EMA, optimizer/RNG/data state (last K kept)
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from genforge.config import (DEFAULT_RECIPE, ConfigError, RunConfig, apply_overrides, load_yaml, recipe_path,
                             resolve_run_config, to_dict)
from genforge.data import BatchStream, ImageData, TextData, TokenBatches, is_text_dataset, load_images, load_text
from genforge.evaluation.images import proxy_fid_hook
from genforge.evaluation.text import heldout_nll, target_chars
from genforge.io import atomic_copy, atomic_write_text
from genforge.models import GenerativeModel, build, config_class
from genforge.models.base import CONFIG_FILE
from genforge.sampling.images import generate_images, grid_condition, save_grid
from genforge.sampling.text import generate_text
from genforge.training.checkpoint import latest_checkpoint, seed_everything
from genforge.training.trainer import Trainer, TrainingError, TrainResult

BEST_DIR = "best"  # text runs: the model with the lowest validation loss so far


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (exists, missing, not a run)."""


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
    """Strictly validate a raw recipe (see ``genforge.config.resolve_run_config``)."""
    cfg = resolve_run_config(raw, config_class)
    if cfg.data.data_dir is not None:
        cfg.data.data_dir = str(Path(cfg.data.data_dir).expanduser().resolve())
    return cfg


def fit_model_to_data(cfg: RunConfig, data: ImageData) -> RunConfig:
    """Fill the model's image shape and class count from the data, checking explicit values."""
    m = cfg.model
    for field, actual in (("channels", data.channels), ("image_size", data.image_size)):
        given = getattr(m, field)
        if given and given != actual:
            raise ConfigError(f"model.{field}={given} but the data gives {actual}; "
                              f"set data.{field} to convert the data instead")
    if m.conditional and data.num_classes < 2:
        raise ConfigError(f"model.conditional=true but dataset {data.name!r} has no class labels")
    model = dataclasses.replace(m, channels=data.channels, image_size=data.image_size,
                                num_classes=data.num_classes if m.conditional else 0)
    return dataclasses.replace(cfg, model=model)


def fit_model_to_text(cfg: RunConfig, data: TextData) -> RunConfig:
    """Fill a language model's ``vocab_size`` from the tokenizer, checking an explicit value."""
    m = cfg.model
    if not hasattr(m, "vocab_size"):
        raise ConfigError(f"dataset {data.name!r} is text but model.family={m.family!r} models images; "
                          f"use a text family (gpt)")
    if m.vocab_size and m.vocab_size != data.vocab_size:
        raise ConfigError(f"model.vocab_size={m.vocab_size} but the {data.tokenizer.kind} tokenizer has "
                          f"{data.vocab_size} tokens; leave model.vocab_size at 0 to take it from the data")
    return dataclasses.replace(cfg, model=dataclasses.replace(m, vocab_size=data.vocab_size))


def _new_run_dir(out: str | Path | None, name: str) -> Path:
    if out is not None:
        run_dir = Path(out)
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise RunDirError(f"run directory {run_dir} already exists and is not empty; pass --resume to "
                              f"continue it, or choose another --out (nothing was changed)")
        return run_dir
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path("runs") / f"{name}-{stamp}"
    i = 1
    while run_dir.exists():
        i += 1
        run_dir = Path("runs") / f"{name}-{stamp}-{i}"
    return run_dir


def train(recipe: str | None = None, *, config_file: str | Path | None = None, overrides: Sequence[str] = (),
          data_dir: str | Path | None = None, out: str | Path | None = None, resume: bool = False,
          cache_dir: str | Path | None = None, progress: bool | None = None) -> TrainOutcome:
    """Train a recipe into a run directory (the body of ``genforge train``).

    Args:
        recipe: shipped recipe name (``genforge recipes list``); None = default.
        config_file: path of a user recipe instead of ``recipe``.
        overrides: ``"section.key=value"`` strings applied over the recipe.
        data_dir: read the dataset's files from this folder (offline).
        out: run directory; default ``runs/<recipe>-<timestamp>``.
        resume: continue ``out`` from its newest checkpoint, using its own
            ``config.yaml`` (``overrides`` may still change e.g. ``train.max_steps``).
        progress: show the progress bar (default: the recipe's ``train.progress``).
    """
    if resume:
        if out is None:
            raise RunDirError("--resume needs --out RUN_DIR: the run to continue")
        if recipe or config_file:
            raise ConfigError("--resume continues RUN_DIR with its own config.yaml; "
                              "drop the recipe/--config (use --set to change values)")
        run_dir = Path(out)
        if not (run_dir / CONFIG_FILE).is_file():
            raise RunDirError(f"--resume: {run_dir} is not a genforge run (no {CONFIG_FILE})")
        if latest_checkpoint(run_dir) is None:
            raise TrainingError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}; nothing to resume")
        raw = load_yaml(run_dir / CONFIG_FILE)
        raw.pop("genforge_version", None)
        raw = _apply_cli(raw, overrides, data_dir)
        name = run_dir.name
    else:
        raw, name = load_recipe(recipe, config_file=config_file, overrides=overrides, data_dir=data_dir)
    cfg = resolve(raw)
    if progress is not None:
        cfg.train.progress = progress
    if not resume:
        run_dir = _new_run_dir(out, name)

    cache = Path(cache_dir) if cache_dir else None
    if is_text_dataset(cfg.data.name):
        return _train_text(cfg, run_dir, resume, cache)
    if getattr(cfg.model, "vocab_size", None) is not None:
        raise ConfigError(f"model.family={cfg.model.family!r} needs text data (tinyshakespeare or text:PATH), "
                          f"got data.name={cfg.data.name!r}")
    return _train_images(cfg, run_dir, resume, cache)


def _train_images(cfg: RunConfig, run_dir: Path, resume: bool, cache: Path | None) -> TrainOutcome:
    data = load_images(cfg.data, cache_dir=cache)
    cfg = fit_model_to_data(cfg, data)
    seed_everything(cfg.train.seed)  # model init and the training noise follow train.seed
    model = build(cfg.model)
    batches = BatchStream(data.train_x, data.train_y, cfg.train.batch_size, seed=cfg.train.seed,
                          hflip=cfg.data.hflip)

    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = to_dict(cfg)
    family = cfg.model.family

    def on_save(sampling_model: GenerativeModel) -> None:
        sampling_model.save_pretrained(run_dir, run_config=resolved)

    def write_grid(sampling_model: GenerativeModel, path: Path, step: int) -> None:
        condition, nrow = grid_condition(sampling_model, cfg.sample.n)
        images = generate_images(sampling_model, cfg.sample.n, condition=condition, seed=cfg.sample.seed,
                                 batch_size=cfg.sample.batch_size)
        save_grid(images, path, nrow=cfg.sample.nrow or nrow,
                  metadata={"genforge_model": family, "run": run_dir.name, "step": step,
                            "seed": cfg.sample.seed, "label": "per-column" if condition else "none"})

    def on_sample(sampling_model: GenerativeModel, step: int) -> None:
        write_grid(sampling_model, run_dir / "samples" / f"step-{step:08d}.png", step)

    evaluate = None
    if cfg.train.eval_every > 0:  # proxy FID vs cached test-split statistics; None (warned) without an evaluator
        evaluate = proxy_fid_hook(data, cfg.data, n=cfg.train.eval_samples, seed=cfg.sample.seed,
                                  batch_size=cfg.sample.batch_size, cache_dir=cache)

    if not resume:
        on_save(model)  # config.yaml + initial weights: the run is loadable from the start
    trainer = Trainer(model, cfg.train, batches, run_dir, on_sample=on_sample, on_save=on_save, evaluate=evaluate)
    result = trainer.fit(resume=resume)
    atomic_copy(run_dir / "samples" / f"step-{result.step:08d}.png", run_dir / "samples.png")  # fit's final grid
    return TrainOutcome(run_dir, cfg, trainer.sampling_model, result)


def _train_text(cfg: RunConfig, run_dir: Path, resume: bool, cache: Path | None) -> TrainOutcome:
    """A language model on a text corpus: full validation loss at each evaluation, best model kept."""
    data = load_text(cfg.data, cache_dir=cache)
    cfg = fit_model_to_text(cfg, data)
    seed_everything(cfg.train.seed)
    model = build(cfg.model)
    block = cfg.model.block_size
    batches = TokenBatches(data.train, block, cfg.train.batch_size, seed=cfg.train.seed)
    tokenizer = data.tokenizer
    val_chars = target_chars(data)

    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = to_dict(cfg)

    def on_save(sampling_model: GenerativeModel) -> None:
        sampling_model.save_pretrained(run_dir, run_config=resolved)
        tokenizer.save(run_dir)

    def evaluate(sampling_model: GenerativeModel, step: int) -> dict[str, float]:
        return heldout_nll(sampling_model, data.val, block_size=block,
                           batch_size=max(64, cfg.train.batch_size), chars=val_chars)

    def on_best(sampling_model: GenerativeModel, step: int, metrics: dict[str, float]) -> None:
        best = run_dir / BEST_DIR
        sampling_model.save_pretrained(best, run_config=resolved)
        tokenizer.save(best)
        atomic_write_text(best / "best.json", json.dumps({"step": step, **metrics}, indent=1) + "\n")

    def write_text(sampling_model: GenerativeModel, path: Path, step: int) -> None:
        s = cfg.sample
        texts = generate_text(sampling_model, tokenizer, s.prompt, n=s.n, max_new_tokens=s.max_new_tokens,
                              temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, seed=s.seed)
        header = f"# {run_dir.name} step {step}, seed {s.seed}, temperature {s.temperature}"
        body = "\n".join(f"--- sample {i} ---\n{t}\n" for i, t in enumerate(texts))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, f"{header}\n{body}")

    def on_sample(sampling_model: GenerativeModel, step: int) -> None:
        write_text(sampling_model, run_dir / "samples" / f"step-{step:08d}.txt", step)

    if not resume:
        on_save(model)
    trainer = Trainer(model, cfg.train, batches, run_dir, on_sample=on_sample, on_save=on_save,
                      evaluate=evaluate, best_metric="val/loss", on_best=on_best,
                      examples_per_batch=cfg.train.batch_size * block, unit="tokens")
    result = trainer.fit(resume=resume)
    atomic_copy(run_dir / "samples" / f"step-{result.step:08d}.txt", run_dir / "samples.txt")  # fit's final text
    return TrainOutcome(run_dir, cfg, trainer.sampling_model, result)
