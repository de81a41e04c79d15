"""Typed configs, YAML recipes, ``--set`` overrides and strict validation.

Every config section is a ``@dataclass(kw_only=True)`` whose ``__post_init__``
checks ranges and raises ``ValueError`` naming the field. :func:`from_dict`
builds such a dataclass from plain data and rejects unknown keys (suggesting
the closest valid one) and wrong types, so a bad recipe fails before any work
starts. This module imports nothing from the rest of genforge.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from genforge.config.errors import ConfigError, FieldError, _require, did_you_mean
from genforge.config.files import (DEFAULT_RECIPE, RECIPES_DIR, apply_overrides, dump_yaml, list_recipes, load_yaml,
                                   parse_override, recipe_path)

__all__ = [
    "ConfigError",
    "FieldError",
    "did_you_mean",
    "DataConfig",
    "parse_colour",
    "TrainConfig",
    "lr_factor",
    "RunConfig",
    "from_dict",
    "to_dict",
    "apply_overrides",
    "parse_override",
    "load_yaml",
    "dump_yaml",
    "resolve_run_config",
    "DEFAULT_RECIPE",
    "RECIPES_DIR",
    "list_recipes",
    "recipe_path",
]


# Resource bounds checked up front, so an extreme value is refused before any work instead of hanging or crashing.
MAX_STEPS = 10**9  # optimizer steps of one run
MAX_BATCH = 65_536  # examples per training batch
TRACKERS = ("tensorboard", "mlflow", "wandb")  # where training metrics go besides metrics.jsonl
MAX_THREADS = 1024  # torch intra-op threads (more than any machine has; torch crashes on absurd values)


# --------------------------------------------------------------------------- sections


_COLOURS = {"black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128), "grey": (128, 128, 128)}


def parse_colour(text: str) -> tuple[int, int, int]:
    """A background colour: ``black``, ``white``, ``gray``, ``#RRGGBB`` or ``R,G,B`` (0..255) → (R, G, B).

    Raises:
        ValueError: anything else, with the accepted forms.
    """
    t = text.strip().lower()
    if t in _COLOURS:
        return _COLOURS[t]
    try:
        if t.startswith("#") and len(t) == 7:
            return tuple(int(t[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        parts = [int(p) for p in t.split(",")]
        if len(parts) == 3 and all(0 <= p <= 255 for p in parts):
            return tuple(parts)  # type: ignore[return-value]
    except ValueError:
        pass
    raise ValueError(f"{text!r} is not a colour: use black, white, gray, #RRGGBB or R,G,B with values 0..255")



@dataclass(kw_only=True)
class DataConfig:
    """Which dataset to train on and how to present it.

    ``name`` is a registered dataset (``genforge datasets``) or
    ``imagefolder:PATH``. ``image_size``/``channels`` of ``None`` keep the
    dataset's native values (an image folder of mixed sizes needs ``image_size``).
    """

    name: str = "digits"
    data_dir: str | None = None  # read the dataset's files from here instead of the cache
    image_size: int | None = None  # square side in pixels; resize + center-crop
    channels: int | None = None  # 1 (grayscale), 3 (RGB) or 4 (RGBA); None = native
    test_fraction: float = 0.1  # held-out share for datasets without an official split
    split_seed: int = 0  # seed of that split (independent of the training seed)
    hflip: bool = False  # random horizontal flips during training
    max_train: int | None = None  # use only the first N shuffled training images
    verify: bool = True  # check data_dir files against the built-in dataset's known checksums (--no-verify)
    # text datasets (text:PATH, tinyshakespeare): test_fraction is the validation tail of the corpus
    tokenizer: Literal["char", "byte", "bpe"] = "char"
    vocab_size: int = 2048  # BPE vocabulary size (char/byte derive theirs from the data)
    # colour and captions
    background: str | None = None  # under transparent pixels: black, white, gray, #RRGGBB or R,G,B; None = the dataset's
    caption_column: str = "text"  # imagefolder metadata.jsonl/csv: the column holding each image's caption
    label_column: str | None = None  # imagefolder metadata: a column whose values become class labels
    caption_template: str | None = None  # captions made from labels when the data has none, e.g. "digit {label}"

    def __post_init__(self) -> None:
        _require(bool(self.name), "name must not be empty")
        _require(64 <= self.vocab_size <= 1_000_000, f"vocab_size must be in [64, 1000000], got {self.vocab_size}")
        _require(self.image_size is None or 4 <= self.image_size <= 1024,
                 f"image_size must be in [4, 1024], got {self.image_size}")
        _require(self.channels in (None, 1, 3, 4), f"channels must be 1, 3 or 4, got {self.channels}")
        _require(0.0 < self.test_fraction < 1.0, f"test_fraction must be in (0, 1), got {self.test_fraction}")
        _require(self.max_train is None or self.max_train > 0, f"max_train must be positive, got {self.max_train}")
        if self.background is not None:
            try:
                parse_colour(self.background)
            except ValueError as e:
                raise FieldError("background", str(e)) from None
        _require(bool(self.caption_column), "caption_column must not be empty")
        template = self.caption_template
        if template is not None and ("{label}" not in template or any(b in template.replace("{label}", "")
                                                                       for b in "{}")):
            raise FieldError("caption_template", f"must hold {{label}} and no other braces, got {template!r}")


@dataclass(kw_only=True)
class TrainConfig:
    """The one trainer's settings (see ``genforge.training.trainer``).

    Steps count updates of the *last* parameter group (the generator for a GAN,
    the only group otherwise); ``group_steps`` repeats earlier groups, e.g.
    ``{discriminator: 2}`` takes two discriminator steps per generator step.
    """

    seed: int = 0
    max_steps: int = 1000
    batch_size: int = 64
    optimizer: Literal["adam", "adamw", "muon"] = "adam"  # muon: Muon on hidden matrices + AdamW (training/muon.py)
    lr: float = 2e-4
    muon_lr: float = 0.02  # muon: the hidden matrices' peak lr (train.lr stays AdamW's); the schedule scales both
    muon_momentum: float = 0.95  # muon: Muon's (Nesterov) momentum
    group_lr: dict[str, float] = field(default_factory=dict)  # per-group lr override
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    min_lr_ratio: float = 0.1  # final lr / peak lr for cosine and linear decay
    grad_clip: float = 0.0  # max global grad norm per group; 0 disables
    grad_accum: int = 1  # micro-batches of batch_size accumulated per optimizer update
    group_steps: dict[str, int] = field(default_factory=dict)
    ema_decay: float = 0.999  # 0 disables the weight average used for sampling
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: Literal["fp32", "bf16-mixed", "fp16-mixed", "auto"] = "fp32"  # auto: bf16-mixed where it runs in hardware
    num_threads: int = 0  # torch intra-op threads on CPU; 0 keeps torch's default
    log_every: int = 50
    sample_every: int = 500  # sample grid every N steps; 0 = only at the end
    checkpoint_every: int = 500  # 0 = only at the end
    keep_checkpoints: int = 2
    max_minutes: float = 0.0  # stop (with a checkpoint) after this wall time; 0 = no limit
    eval_every: int = 0  # evaluate every N steps (text: full validation loss; images: proxy FID); 0 = at the end only
    eval_samples: int = 2000  # images: generated samples for the proxy FID
    progress: bool = True
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])  # any of TRACKERS
    tracking_uri: str | None = None  # MLflow: any tracking URI; None = sqlite file beside the run directory
    experiment: str = "genforge"  # MLflow experiment / W&B project the runs are filed under

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # YAML gives lists
        unknown = [t for t in self.trackers if t not in TRACKERS]
        _require(not unknown, f"trackers: unknown tracker(s) {unknown}; choose from {list(TRACKERS)}")
        _require(len(set(self.trackers)) == len(self.trackers), f"trackers: {self.trackers} names one twice")
        _require(bool(self.experiment), "experiment must not be empty")
        _require(0 < self.max_steps <= MAX_STEPS, f"max_steps must be in [1, {MAX_STEPS}], got {self.max_steps}")
        _require(0 < self.batch_size <= MAX_BATCH, f"batch_size must be in [1, {MAX_BATCH}], got {self.batch_size}")
        _require(self.lr > 0, f"lr must be positive, got {self.lr}")
        for group, lr in self.group_lr.items():
            _require(lr > 0, f"group_lr.{group} must be positive, got {lr}")
        _require(len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
                 f"betas must be two numbers in [0, 1), got {list(self.betas)}")
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        if not self.muon_lr > 0:
            raise FieldError("muon_lr", f"must be positive, got {self.muon_lr}")
        if not 0.0 <= self.muon_momentum < 1.0:
            raise FieldError("muon_momentum", f"must be in [0, 1), got {self.muon_momentum}")
        _require(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        _require(0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        _require(self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}")
        _require(self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}")
        for group, n in self.group_steps.items():
            _require(n >= 1, f"group_steps.{group} must be >= 1, got {n}")
        _require(0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        _require(0 <= self.num_threads <= MAX_THREADS,
                 f"num_threads must be in [0, {MAX_THREADS}] (0 = torch's default), got {self.num_threads}")
        _require(self.log_every > 0, f"log_every must be positive, got {self.log_every}")
        _require(self.sample_every >= 0, f"sample_every must be >= 0, got {self.sample_every}")
        _require(self.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        _require(self.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        _require(self.max_minutes >= 0, f"max_minutes must be >= 0, got {self.max_minutes}")
        _require(self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}")
        _require(self.eval_samples >= 2, f"eval_samples must be >= 2, got {self.eval_samples}")
        dev = self.device
        _require(dev in ("auto", "cpu", "cuda", "mps") or dev.startswith("cuda:"),
                 f"device must be auto, cpu, cuda, cuda:N or mps, got {dev!r}")


def lr_factor(step: int, *, max_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Multiplier of the peak learning rate at (0-based) ``step``: a pure function, so resuming needs no state.

    Linear warm-up from ``1 / warmup_steps`` to 1 over the first ``warmup_steps``
    steps (none when 0), then ``schedule``: ``"constant"`` stays at 1,
    ``"cosine"`` and ``"linear"`` decay to ``min_lr_ratio`` at ``max_steps``
    (and stay there after it). Both the trainer (``TrainConfig``'s fields) and
    the evaluator classifiers (cosine to 0) use it.
    """
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "linear":
        decay = 1.0 - progress
    else:
        raise ValueError(f"schedule must be constant, cosine or linear, got {schedule!r}")
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


@dataclass(kw_only=True)
class RunConfig:
    """A whole recipe: one dataclass per section. ``model`` is the family's config.

    ``task`` is the kind of data (``image``, ``text``); empty in a recipe, it is
    filled from the model family when the run is created and recorded in the
    run's ``config.yaml``. ``sample`` holds the settings of the samples written
    during training: the task's request fields (n, seed …) and the family's
    sample options, validated by the task's sampling pipeline. ``parents`` names
    the runs this one stands on (an autoencoder, a text encoder, a run it starts
    from), by role; ``config.yaml`` records each one's path and weights' sha256.
    """

    description: str = ""
    task: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = None
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: dict[str, Any] = field(default_factory=dict)
    parents: dict[str, Any] = field(default_factory=dict)  # role → run directory this run stands on (+ sha256)


# --------------------------------------------------------------------------- strict building


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _short(value: Any) -> str:
    """A bounded ``repr`` for messages: a huge or deeply nested value (e.g. from YAML aliases) is cut short
    without being walked whole."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother, r.maxlist, r.maxdict = 2, 60, 60, 4, 4
    text = r.repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; returns the (lightly coerced) value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if errors else ConfigError(f"{key}: expected {_type_name(tp)}, got {_short(value)}", key=key)
    if origin is Literal:
        if value in args:
            return value
        hint = did_you_mean(value if isinstance(value, str) else _short(value), [str(a) for a in args], cutoff=0.6)
        raise ConfigError(f"{key}: {_short(value)} is not one of {', '.join(repr(a) for a in args)}{hint}", key=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {_short(value)}", key=key)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}", key=key)
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        return origin(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {_short(value)}", key=key)
        kt, vt = args or (Any, Any)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {_short(value)}", key=key)
        return from_dict(tp, value, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {type(value).__name__} {_short(value)}", key=key)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {type(value).__name__} {_short(value)}", key=key)
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"{key}: expected a finite number, got {_short(value)}", key=key)
            return number
        raise ConfigError(f"{key}: expected a number, got {type(value).__name__} {_short(value)}", key=key)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {type(value).__name__} {_short(value)}", key=key)
    raise TypeError(f"{key}: unsupported config annotation {tp!r}")


def _unknown_key(key: str, valid: list[str], prefix: str) -> ConfigError:
    where = f"{prefix}.{key}" if prefix else key
    if not valid:
        return ConfigError(f"unknown config key {where!r}: {prefix or 'this section'} takes no keys", key=where)
    hint = did_you_mean(key, valid, prefix=prefix + "." if prefix else "")
    return ConfigError(f"unknown config key {where!r}{hint} (valid keys: {', '.join(sorted(valid))})", key=where)


def from_dict(cls: type, data: dict[str, Any] | None, *, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, strictly.

    Raises:
        ConfigError: an unknown key (with the closest valid key), a value of the
            wrong type, or a value rejected by ``cls.__post_init__``; the message
            names the dotted key, e.g. ``train.lr``.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise _unknown_key(key, list(fields), prefix)
        kwargs[key] = _coerce(value, hints[key], f"{prefix}.{key}" if prefix else key)
    try:
        return cls(**kwargs)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        where = f"{prefix}." if prefix else ""
        key = f"{where}{e.field}" if isinstance(e, FieldError) else None
        raise ConfigError(f"invalid value: {where}{e}", key=key) from None


def to_dict(obj: Any) -> Any:
    """Dataclass (possibly nested) → plain YAML-safe data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


_SECTIONS = {"description": str, "task": str, "data": DataConfig, "train": TrainConfig, "sample": dict[str, Any],
             "parents": dict[str, Any]}


def resolve_run_config(raw: dict[str, Any], model_config_class: Callable[[str], type]) -> RunConfig:
    """Validate a whole recipe (after overrides) into a :class:`RunConfig`.

    Args:
        raw: mapping with ``data``, ``model``, ``train``, ``sample`` sections.
        model_config_class: maps ``model.family`` to that family's config class
            (``genforge.models.config_class``); passed in so this module stays
            free of internal imports.
    """
    valid = [*_SECTIONS, "model", "genforge_version"]
    for key in raw:
        if key not in valid:
            raise _unknown_key(key, valid, "")
    model_raw = dict(raw.get("model") or {})
    family = model_raw.get("family")
    if not family:
        raise ConfigError("model.family is required (e.g. gan or vae)")
    model_cls = model_config_class(family)
    kwargs: dict[str, Any] = {}
    for key, tp in _SECTIONS.items():
        if key in raw:
            kwargs[key] = _coerce(raw[key], tp, key)
    return RunConfig(model=from_dict(model_cls, model_raw, prefix="model"), **kwargs)
