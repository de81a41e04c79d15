"""What a modality task owns, and the hooks it hands to the one training flow.

A task (``image``, ``text``) knows its kind of data: how to load it, how to fit
a model config to it, how to batch it, what to evaluate during training, how
to write periodic samples (through its sampling pipeline) and how to open a
finished run for inference and evaluation. ``training/run.py`` runs one flow
over any task; ``cli.py`` and ``serve/`` never branch on the modality.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

from torch import Tensor

from genforge.config import DataConfig, RunConfig
from genforge.evaluation.protocol import Report
from genforge.models.base import GenerativeModel, SampleOptions

EvalHook = Callable[[GenerativeModel, int], dict[str, Any]]


@dataclass
class TrainingHooks:
    """Task-specific parts of a training run.

    Attributes:
        save_extra: writes files a model directory needs besides config and weights (a tokenizer).
        evaluate: the trainer's evaluation hook (validation loss, proxy FID); None = none.
        best_metric: key of ``evaluate``'s result whose lowest value is kept in ``best/``; None = no best model.
        examples_per_batch, unit: throughput accounting (``B·T`` tokens, or images).
    """

    save_extra: Callable[[Path], None]
    evaluate: EvalHook | None = None
    best_metric: str | None = None
    examples_per_batch: int | None = None
    unit: str = "images"


class Task:
    """Base of the modality tasks; every method is implemented by each task."""

    name: ClassVar[str]
    pipeline_class: ClassVar[type]  # ImagePipeline / TextPipeline: .request_class, .from_run, .parse, .write
    metrics: ClassVar[tuple[str, ...]]  # names ``genforge eval --metrics`` accepts
    sample_hint: ClassVar[str] = ""  # flags shown after training in the suggested ``genforge sample`` command

    # ---- training
    def check(self, cfg: RunConfig) -> None:
        """Raise ``ConfigError`` when the recipe's data is not of this task's kind (before any loading)."""
        raise NotImplementedError

    def load_data(self, data_cfg: DataConfig, *, cache_dir: Path | None = None, progress: bool = True) -> Any:
        raise NotImplementedError

    def fit(self, cfg: RunConfig, data: Any) -> RunConfig:
        """``cfg`` with the model's data-dependent fields (shape, classes, vocabulary) filled and checked."""
        raise NotImplementedError

    def batches(self, cfg: RunConfig, data: Any) -> Iterator[dict[str, Tensor]]:
        """The seeded, resumable training batch stream."""
        raise NotImplementedError

    def training_hooks(self, cfg: RunConfig, data: Any, *, cache_dir: Path | None = None) -> TrainingHooks:
        raise NotImplementedError

    # ---- inference
    def pipeline(self, model: GenerativeModel, data: Any, *, name: str = "") -> Any:
        """A sampling pipeline around an in-memory model (the trainer's sampling model)."""
        raise NotImplementedError

    def open(self, run_dir: str | Path, *, device: str = "cpu", weights: str | None = None) -> Any:
        """A sampling pipeline loaded from a run (or model) directory."""
        kwargs = {} if weights is None else {"weights": weights}
        return self.pipeline_class.from_run(run_dir, device=device, **kwargs)

    def parse_sample(self, family_options: type[SampleOptions], raw: dict[str, Any]) -> tuple[Any, SampleOptions]:
        """Validate a ``sample:`` mapping for this task and a family's options (before any work)."""
        from genforge.sampling.options import parse_options

        return parse_options(self.pipeline_class.request_class, family_options, raw)

    def hint(self, model: GenerativeModel) -> str:
        """Flags of the ``genforge sample`` command suggested after training: the task's, plus a placeholder
        for every condition the model cannot sample without (``--image SOURCE.png`` for super-resolution)."""
        needs = {"image": "--image SOURCE.png", "text": '--prompt "..."', "label": "--label 0", "mask": ""}
        return " ".join([self.sample_hint, *(needs[k] for k in model.required_conditions())]).strip()

    # ---- evaluation
    def eval_options(self, *, metrics: tuple[str, ...] | None, device: str, cache_dir: Path | None,
                     progress: bool, options: dict[str, Any]) -> Any:
        """The task's evaluation options, validated before any work (options of other tasks are ignored)."""
        raise NotImplementedError

    def evaluate(self, pipeline: Any, data: Any, data_cfg: DataConfig, opts: Any) -> Report:
        """Evaluate a loaded run with :meth:`eval_options`' result."""
        raise NotImplementedError
