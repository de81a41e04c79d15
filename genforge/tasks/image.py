"""The image task: image datasets, shape-fitted configs, PNG grids, proxy FID, image evaluation."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator

from torch import Tensor

from genforge.config import ConfigError, DataConfig, RunConfig
from genforge.data import BatchStream, ImageData, is_text_dataset, load_images
from genforge.evaluation.images import IMAGE_METRICS, ImageEvalOptions, evaluate_images, proxy_fid_hook
from genforge.evaluation.protocol import Report
from genforge.evaluation.retrieval import CAPTION_LOSS, retrieval_hook
from genforge.models.base import GenerativeModel
from genforge.models.capabilities import EmbedsTextAndImages
from genforge.rundir import RunDir
from genforge.models.text_encoder import WordTokenizer, words_of
from genforge.sampling.images import ImagePipeline
from genforge.sampling.options import pick_fields
from genforge.tasks.base import Task, TrainingHooks


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
    if m.prompted and not data.captioned:
        raise ConfigError(f"model.prompted=true but dataset {data.name!r} has no captions; use a captioned dataset "
                          f"(emoji, or imagefolder:PATH with a metadata.jsonl/csv holding a text column)",
                          key="model.prompted")
    model = dataclasses.replace(m, channels=data.channels, image_size=data.image_size,
                                num_classes=data.num_classes if m.conditional else 0,
                                class_names=list(data.classes) if m.conditional else [])
    encoder = cfg.parents.get(TEXT_ENCODER)
    if encoder is not None:
        model = _read_with(model, encoder["path"])
    if m.prompted and not model.text_words:  # a resumed or derived run keeps the vocabulary it was trained with
        tokenizer = WordTokenizer.fit(data.train_text, m.text_len or MAX_TEXT_LEN)
        model = dataclasses.replace(model, text_words=tokenizer.words, text_len=tokenizer.length)
    if m.prompted and not model.sample_prompts:
        tokenizer = WordTokenizer(model.text_words, model.text_len)
        model = dataclasses.replace(model, sample_prompts=preview_prompts(data, tokenizer))
    return dataclasses.replace(cfg, model=model)


TEXT_ENCODER = "text_encoder"  # the parent role of a frozen caption encoder (a clip run)
TEXT_FIELDS = ("text_words", "text_len", "text_width", "text_layers")


def _read_with(model: Any, encoder_path: str) -> Any:
    """``model`` (a prompted config) reading captions with the clip run at ``encoder_path``: its vocabulary,
    caption length and text tower shape, ``frozen_text`` set; a field the recipe set otherwise is refused."""
    if not getattr(model, "prompted", False) or not hasattr(model, "frozen_text"):
        raise ConfigError(f"parents.{TEXT_ENCODER} is for text-to-image diffusion models (model.prompted: true)",
                          key=f"parents.{TEXT_ENCODER}")
    theirs = RunDir(encoder_path).read_config().get("model") or {}
    if theirs.get("family") != "clip":
        raise ConfigError(f"parents.{TEXT_ENCODER} must be a clip run, got family {theirs.get('family')!r}",
                          key=f"parents.{TEXT_ENCODER}")
    defaults = type(model)(family=model.family)
    copied = {}
    for name in TEXT_FIELDS:
        given = getattr(model, name)
        if given != getattr(defaults, name) and given != theirs[name]:
            raise ConfigError(f"model.{name} is set, but the captions are read by the parents.{TEXT_ENCODER} run, "
                              f"which fixes it: leave it out", key=f"model.{name}")
        copied[name] = theirs[name]
    return dataclasses.replace(model, frozen_text=True, **copied)


MAX_TEXT_LEN = 32  # words read per caption when the recipe does not say


def preview_prompts(data: ImageData, tokenizer: WordTokenizer, n_train: int = 12, n_test: int = 4) -> list[str]:
    """Captions for preview grids: ``n_train`` training captions and ``n_test`` held-out ones (whose words the
    ``tokenizer`` fitted on the training captions knows), spread evenly over each list."""
    def spread(captions: list[str], k: int) -> list[str]:
        unique = list(dict.fromkeys(captions))
        return [unique[i * len(unique) // k] for i in range(min(k, len(unique)))]

    held_out = [c for c in data.test_text if all(w in tokenizer.index for w in words_of(c))]
    return spread(data.train_text, n_train) + spread(held_out, n_test)


def caption_ids(cfg: RunConfig, captions: list[str]) -> Tensor:
    """The training captions as the model reads them: int64 [N, L] (words outside the vocabulary → unknown)."""
    return WordTokenizer(cfg.model.text_words, cfg.model.text_len).encode(captions, strict=False)


class ImageTask(Task):
    name = "image"
    pipeline_class = ImagePipeline
    metrics = IMAGE_METRICS
    sample_hint = "--n 64 --seed 1"

    def check(self, cfg: RunConfig) -> None:
        if is_text_dataset(cfg.data.name):
            raise ConfigError(f"model.family={cfg.model.family!r} models images but data.name={cfg.data.name!r} "
                              f"is text; use a text family (gpt) or an image dataset")

    def load_data(self, data_cfg: DataConfig, *, cache_dir: Path | None = None, progress: bool = True) -> ImageData:
        return load_images(data_cfg, cache_dir=cache_dir)

    def fit(self, cfg: RunConfig, data: ImageData) -> RunConfig:
        return fit_model_to_data(cfg, data)

    def batches(self, cfg: RunConfig, data: ImageData) -> Iterator[dict[str, Tensor]]:
        text = caption_ids(cfg, data.train_text) if cfg.model.prompted else None
        return BatchStream(data.train_x, data.train_y, cfg.train.batch_size, seed=cfg.train.seed,
                           hflip=cfg.data.hflip, text=text)

    def training_hooks(self, cfg: RunConfig, data: ImageData, *, cache_dir: Path | None = None) -> TrainingHooks:
        from genforge.models import FAMILIES  # every family: kept off this module's import path

        evaluate = None
        if cfg.train.eval_every > 0 and issubclass(FAMILIES[cfg.model.family], EmbedsTextAndImages):  # no FID
            return TrainingHooks(save_extra=lambda directory: None, evaluate=retrieval_hook(data),
                                 best_metric=CAPTION_LOSS)
        if cfg.train.eval_every > 0:  # proxy FID vs cached test-split statistics; None (warned) without an evaluator
            s = cfg.sample
            evaluate = proxy_fid_hook(data, cfg.data, n=cfg.train.eval_samples, seed=s.get("seed", 0),
                                      batch_size=s.get("batch_size", 256), cache_dir=cache_dir)
        return TrainingHooks(save_extra=lambda directory: None, evaluate=evaluate)

    def pipeline(self, model: GenerativeModel, data: ImageData, *, name: str = "") -> ImagePipeline:
        return ImagePipeline(model, name=name, references=data.test_x)  # previews of image-conditioned models

    def eval_options(self, *, metrics: tuple[str, ...] | None, device: str, cache_dir: Path | None,
                     progress: bool, options: dict[str, Any]) -> ImageEvalOptions:
        return ImageEvalOptions(metrics=metrics, device=device, cache_dir=cache_dir, progress=progress,
                                **pick_fields(ImageEvalOptions, options))

    def evaluate(self, pipeline: ImagePipeline, data: ImageData, data_cfg: DataConfig,
                 opts: ImageEvalOptions) -> Report:
        return evaluate_images(data, data_cfg, opts, pipeline=pipeline)
