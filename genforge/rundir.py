"""The run directory: the name of every file and folder in it, and the run's task.

A run directory is made by ``genforge train`` and read by every other command::

    config.yaml          resolved recipe: task, data, model, train, sample (+ genforge_version)
    model.safetensors    weights used for sampling (the EMA when train.ema_decay > 0)
    tokenizer.json       text runs: the tokenizer
    metrics.jsonl        one JSON line per log step (losses, lr, throughput) and per evaluation
    tb/                  TensorBoard events
    samples/step-*.EXT   periodic samples (.png grids for images, .txt for text)
    samples.EXT          the final samples
    checkpoints/step-*/  model.safetensors, ema.safetensors, state.pt (the last K kept)
    best/                text runs: the model with the lowest validation loss (+ best.json)
    eval.json, eval.md   results of ``genforge eval``

The run's *task* (``image``, ``text`` …) is written into ``config.yaml`` when
the run is created and read back from there; it is never guessed from which
files exist, except for runs written before the field existed
(:func:`legacy_task`, the one place that infers it).

Bottom layer: imports only ``genforge.config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genforge.config import ConfigError, load_yaml

CONFIG = "config.yaml"
WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"
STATE = "state.pt"
TOKENIZER = "tokenizer.json"
METRICS_LOG = "metrics.jsonl"
TB_DIR = "tb"
SAMPLES_DIR = "samples"
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
BEST_JSON = "best.json"
EVAL_JSON = "eval.json"
EVAL_MD = "eval.md"
SAMPLES_STEM = "samples"
SAMPLE_SUFFIX = {"image": ".png", "text": ".txt"}  # the file type each task writes its samples as


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (exists, missing, not a run, unreadable config)."""


def legacy_task(path: Path) -> str:
    """The task of a run written before ``config.yaml`` recorded it: text runs were the ones with a tokenizer."""
    return "text" if (path / TOKENIZER).is_file() else "image"


# Before runs recorded their task, one ``sample`` section served both modalities and
# config.yaml held every key; these belong to the other task and are dropped on upgrade.
_LEGACY_SAMPLE_KEYS = {"image": ("prompt", "max_new_tokens", "temperature", "top_k", "top_p"),
                       "text": ("nrow", "batch_size")}


def upgrade_config(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """A run's raw config in today's format: old runs get their ``task`` and lose the other task's sample keys."""
    if "task" in raw:
        return raw
    task = legacy_task(path)
    sample = raw.get("sample")
    if isinstance(sample, dict):
        sample = {k: v for k, v in sample.items() if k not in _LEGACY_SAMPLE_KEYS[task]}
    return {**raw, "task": task, **({"sample": sample} if sample is not None else {})}


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run (or model) directory; nothing is read until asked.

    ``RunDir(path).best`` is itself a model directory with the same names.
    """

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    # ---- files and folders
    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS

    @property
    def tokenizer(self) -> Path:
        return self.path / TOKENIZER

    @property
    def metrics_log(self) -> Path:
        return self.path / METRICS_LOG

    @property
    def tb(self) -> Path:
        return self.path / TB_DIR

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def best(self) -> RunDir:
        return RunDir(self.path / BEST_DIR)

    @property
    def best_json(self) -> Path:
        return self.path / BEST_DIR / BEST_JSON

    @property
    def eval_json(self) -> Path:
        return self.path / EVAL_JSON

    @property
    def eval_md(self) -> Path:
        return self.path / EVAL_MD

    def samples(self, task: str) -> Path:
        """The final samples file of a ``task`` run (``samples.png``, ``samples.txt``)."""
        return self.path / f"{SAMPLES_STEM}{SAMPLE_SUFFIX[task]}"

    def step_samples(self, step: int, task: str) -> Path:
        """The samples written at training ``step``."""
        return self.path / SAMPLES_DIR / f"step-{step:08d}{SAMPLE_SUFFIX[task]}"

    def sample_output(self, name: str) -> Path:
        """Where ``genforge sample`` writes a file named ``name`` by default."""
        return self.path / SAMPLES_DIR / name

    def existing_samples(self) -> Path | None:
        """The final samples file, whatever the task (compare shows it); None when there is none."""
        return next((p for p in (self.path / f"{SAMPLES_STEM}{s}" for s in SAMPLE_SUFFIX.values()) if p.is_file()),
                    None)

    # ---- content
    def is_run(self) -> bool:
        """Whether this directory holds a loadable model (config and weights)."""
        return self.config.is_file() and self.weights.is_file()

    def require(self, *, what: str = "a genforge run directory") -> RunDir:
        """Raise :class:`RunDirError` naming the first missing file; returns ``self``."""
        if not self.path.is_dir():
            raise RunDirError(f"{self.path} is not {what} (no such directory)")
        for p in (self.config, self.weights):
            if not p.is_file():
                raise RunDirError(f"{self.path} is not {what} ({p.name} is missing)")
        return self

    def read_config(self) -> dict[str, Any]:
        """``config.yaml`` as a mapping in today's format (safe YAML: no tags, nothing executed)."""
        try:
            return upgrade_config(load_yaml(self.config), self.path)
        except ConfigError as e:
            raise RunDirError(f"{self.path}: {e}") from None

    def task(self, raw: dict[str, Any] | None = None) -> str:
        """The task recorded in ``config.yaml`` (``raw``, when already read); old runs: :func:`legacy_task`."""
        raw = self.read_config() if raw is None else raw
        task = raw.get("task")
        if task is None:
            return legacy_task(self.path)
        if not isinstance(task, str) or task not in SAMPLE_SUFFIX:
            raise RunDirError(f"{self.config}: unknown task {task!r}; known tasks: {', '.join(SAMPLE_SUFFIX)}")
        return task

    def family(self, raw: dict[str, Any] | None = None) -> str:
        """The model family named in ``config.yaml`` (``""`` when absent)."""
        raw = self.read_config() if raw is None else raw
        model = raw.get("model")
        return str(model.get("family", "")) if isinstance(model, dict) else ""
