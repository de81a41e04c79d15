"""The text task: corpora and tokenizers, vocabulary-fitted configs, validation loss with a kept best model,
text samples, text evaluation."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator

from torch import Tensor

from genforge.config import ConfigError, DataConfig, RunConfig
from genforge.data import TextData, TokenBatches, is_text_dataset, load_text
from genforge.evaluation.protocol import Report
from genforge.evaluation.text import heldout_nll, target_chars
from genforge.evaluation.textmetrics import TEXT_METRICS, TextEvalOptions, evaluate_text
from genforge.models.base import GenerativeModel
from genforge.sampling.options import pick_fields
from genforge.sampling.text import TextPipeline
from genforge.tasks.base import Task, TrainingHooks


def fit_model_to_text(cfg: RunConfig, data: TextData) -> RunConfig:
    """Fill a language model's ``vocab_size`` from the tokenizer, checking an explicit value."""
    m = cfg.model
    if m.vocab_size and m.vocab_size != data.vocab_size:
        raise ConfigError(f"model.vocab_size={m.vocab_size} but the {data.tokenizer.kind} tokenizer has "
                          f"{data.vocab_size} tokens; leave model.vocab_size at 0 to take it from the data")
    return dataclasses.replace(cfg, model=dataclasses.replace(m, vocab_size=data.vocab_size))


class TextTask(Task):
    name = "text"
    pipeline_class = TextPipeline
    metrics = TEXT_METRICS
    sample_hint = "--max-new-tokens 300 --temperature 0.8"

    def check(self, cfg: RunConfig) -> None:
        if not is_text_dataset(cfg.data.name):
            raise ConfigError(f"model.family={cfg.model.family!r} models text but data.name={cfg.data.name!r} "
                              f"is not a text dataset; use tinyshakespeare or text:PATH")

    def load_data(self, data_cfg: DataConfig, *, cache_dir: Path | None = None, progress: bool = True) -> TextData:
        return load_text(data_cfg, cache_dir=cache_dir, progress=progress)

    def fit(self, cfg: RunConfig, data: TextData) -> RunConfig:
        return fit_model_to_text(cfg, data)

    def batches(self, cfg: RunConfig, data: TextData) -> Iterator[dict[str, Tensor]]:
        return TokenBatches(data.train, cfg.model.block_size, cfg.train.batch_size, seed=cfg.train.seed)

    def training_hooks(self, cfg: RunConfig, data: TextData, *, cache_dir: Path | None = None) -> TrainingHooks:
        """Full validation loss at each evaluation (the best model is kept); the tokenizer beside every model."""
        block = cfg.model.block_size
        val_chars = target_chars(data)

        def evaluate(model: GenerativeModel, step: int) -> dict[str, float]:
            return heldout_nll(model, data.val, block_size=block, batch_size=max(64, cfg.train.batch_size),
                               chars=val_chars)

        return TrainingHooks(save_extra=data.tokenizer.save, evaluate=evaluate, best_metric="val/loss",
                             examples_per_batch=cfg.train.batch_size * block, unit="tokens")

    def pipeline(self, model: GenerativeModel, data: TextData, *, name: str = "") -> TextPipeline:
        return TextPipeline(model, data.tokenizer, name=name)

    def eval_options(self, *, metrics: tuple[str, ...] | None, device: str, cache_dir: Path | None,
                     progress: bool, options: dict[str, Any]) -> TextEvalOptions:
        if options.get("sample"):
            raise ConfigError(f"text evaluation takes its decoding settings as --temperature/--max-new-tokens; "
                              f"unknown options {sorted(options['sample'])}")
        return TextEvalOptions(metrics=metrics, progress=progress, **pick_fields(TextEvalOptions, options))

    def evaluate(self, pipeline: TextPipeline, data: TextData, data_cfg: DataConfig, opts: TextEvalOptions) -> Report:
        return evaluate_text(pipeline, data, data_cfg, opts)
