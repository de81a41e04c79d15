"""The protocol every model family implements, and save/load without pickle.

A family is a ``GenerativeModel`` subclass built from its config dataclass. The
model computes losses; the trainer owns ``backward``, clipping, precision and
optimizer steps. Image batches are ``{"x": uint8 [B, C, H, W], "y": int64 [B]}``
(``y`` only for labelled data); each family maps uint8 pixels to its own scale.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import Tensor, nn

from genforge import __version__
from genforge.config import FieldError, from_dict, to_dict
from genforge.io import atomic_path, atomic_write_text
from genforge.models import rng
from genforge.models.conditions import label_of
from genforge.rundir import CONFIG as CONFIG_FILE
from genforge.rundir import WEIGHTS as WEIGHTS_FILE

Batch = dict[str, Tensor]


# name → (module, example inputs, input names, output names, dynamic axes): what ``onnx_graphs`` returns
OnnxGraphs = dict[str, tuple[nn.Module, tuple[Tensor, ...], list[str], list[str], dict[str, dict[int, str]]]]


@dataclass(kw_only=True)
class ModelConfig:
    """Fields every family config has. ``family`` is the registry key.

    ``task`` (a class attribute, not a field) is the kind of data the family
    models: ``image`` or ``text``; the run's task follows from it.
    """

    task: ClassVar[str] = ""
    family: str


@dataclass(kw_only=True)
class SampleOptions:
    """A family's typed sampling options: the ``**options`` of ``sample``; the base class takes none.

    A family subclasses it, adds fields with defaults and checks them in
    ``__post_init__`` (``ValueError`` naming the field). Options arrive as
    plain values from ``--set sample.KEY=VALUE``, CLI flags, HTTP requests or a
    Python call, and are parsed by :meth:`GenerativeModel.parse_sample_options`.
    """

    def model_evaluations(self) -> int | None:
        """Network evaluations per sample this request asks for (a diffusion sampler's ``steps``); None when
        fixed by the model. Servers bound it, as they bound ``max_tokens``."""
        return None


@dataclass(frozen=True, kw_only=True)
class Likelihood:
    """What a family's ``log_likelihood`` computes, declared so evaluation never has to guess.

    Attributes:
        kind: ``exact`` (e.g. autoregressive) or ``bound`` (a lower bound on log p, e.g. a VAE's IWAE bound).
        estimate: one sentence describing the number (stored with the result).
        importance_samples: for a sampled bound, the number K used (the ``k`` option of
            ``log_likelihood``); None when the family draws no samples.
        stochastic: ``log_likelihood`` takes ``generator=`` (its value depends on random draws).
        params: further protocol fields that change the number (e.g. the decoder likelihood).
        note: a caveat for reports (units, comparability); empty when none.
    """

    kind: Literal["exact", "bound"]
    estimate: str
    importance_samples: int | None = None
    stochastic: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def check_parent_roles(family: type[GenerativeModel], roles: Any) -> None:
    """Raise ``ValueError`` unless ``roles`` (names, or a mapping keyed by them) holds every required role of
    ``family`` and no role it does not know."""
    given, required = set(roles), set(family.parent_roles)
    missing, unknown = required - given, given - required - set(family.optional_parent_roles)
    if missing or unknown:
        wants = ", ".join(family.parent_roles) or "none"
        optional = f" (optional: {', '.join(family.optional_parent_roles)})" if family.optional_parent_roles else ""
        raise ValueError(f"the {family.family} family stands on runs in the roles: {wants}{optional}; "
                         f"missing {sorted(missing)}, unknown {sorted(unknown)} (name them under parents:)")


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the block and restore its previous mode after, even on errors."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@dataclass(kw_only=True)
class ImageModelConfig(ModelConfig):
    """Image shape and conditioning; zeros are filled in from the dataset by the trainer."""

    task: ClassVar[str] = "image"

    channels: int = 0  # 1, 3 or 4; 0 = take from the data
    image_size: int = 0  # square side in pixels; 0 = take from the data
    num_classes: int = 0  # number of labels in the data (filled in when conditional)
    conditional: bool = False  # class-conditional generation
    class_names: list[str] = field(default_factory=list)  # names of labels 0..K-1 (filled in when conditional)
    prompted: bool = False  # text-to-image: conditioned on each image's caption (a captioned dataset)
    text_words: list[str] = field(default_factory=list)  # prompted: the caption vocabulary (filled from the data)
    text_len: int = 0  # prompted: words read per caption (0 = the longest training caption's, at most 32)
    sample_prompts: list[str] = field(default_factory=list)  # prompted: captions drawn when no prompt is given

    def __post_init__(self) -> None:
        if self.prompted and self.conditional:
            raise FieldError("prompted", "and conditional cannot both be set: a model is conditioned on labels or "
                                         "on captions")
        if not 0 <= self.text_len <= 256:
            raise FieldError("text_len", f"must be in [0, 256], got {self.text_len}")
        if self.channels not in (0, 1, 3, 4):
            raise FieldError("channels", f"must be 1, 3 or 4, got {self.channels}")
        if self.image_size != 0 and not 4 <= self.image_size <= 1024:
            raise FieldError("image_size", f"must be in [4, 1024], got {self.image_size}")
        if self.num_classes < 0:
            raise FieldError("num_classes", f"must be >= 0, got {self.num_classes}")

    def check_complete(self) -> None:
        """Raise if the shape was never filled in (a model cannot be built without it)."""
        if self.channels == 0 or self.image_size == 0:
            raise ValueError("model.channels and model.image_size must be set (the trainer fills them from the data)")
        if self.conditional and self.num_classes < 2:
            raise ValueError("model.conditional needs a labelled dataset with at least 2 classes")
        if self.prompted and (not self.text_words or not self.text_len):
            raise ValueError("model.prompted needs model.text_words and model.text_len (filled from a captioned "
                             "dataset's training captions)")


def images_to_unit(x: Tensor) -> Tensor:
    """uint8 [B, C, H, W] in [0, 255] → float32 in [0, 1]."""
    if x.dtype != torch.uint8:
        raise TypeError(f"image batches must be uint8 [B, C, H, W], got {x.dtype}")
    return x.float().div_(255.0)


def check_image_batch(x: Tensor, channels: int, image_size: int) -> None:
    """Raise a ``ValueError`` naming the expected and actual shapes."""
    if x.ndim != 4 or x.shape[1] != channels or x.shape[2] != image_size or x.shape[3] != image_size:
        raise ValueError(
            f"expected images of shape [B, {channels}, {image_size}, {image_size}], got {list(x.shape)}"
        )


def batch_labels(y: Tensor | None, n: int, num_classes: int, device: torch.device, family: str) -> Tensor | None:
    """Validate a batch's labels: int64 [n] in [0, num_classes) on ``device``; None when unconditional."""
    if not num_classes:
        return None
    if y is None:
        raise ValueError(f"a conditional {family} needs labels: the batch has no 'y'")
    y = torch.as_tensor(y).to(device, torch.long)
    if y.shape != (n,) or int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"batch 'y' must be {n} labels in [0, {num_classes - 1}]")
    return y


def unpack_image_batch(batch: Batch, config: ImageModelConfig, device: torch.device,
                       family: str) -> tuple[Tensor, Tensor | None]:
    """Check an image batch → (images float32 [B, C, S, S] in [0, 1] on ``device``, labels [B] or None)."""
    x = batch["x"]
    check_image_batch(x, config.channels, config.image_size)
    x = images_to_unit(x.to(device))
    k = config.num_classes if config.conditional else 0
    return x, batch_labels(batch.get("y"), x.shape[0], k, device, family)


def labels_for(n: int, condition: Any, num_classes: int, device: torch.device,
               generator: torch.Generator | None) -> Tensor | None:
    """Turn a ``sample(condition=...)`` argument into int64 labels [n].

    ``condition`` may be None (random labels for a conditional model), an int
    (all the same class), a sequence/tensor of n labels, or a
    :class:`~genforge.models.conditions.Condition` whose ``label`` is one of those.
    """
    condition = label_of(condition)
    if num_classes == 0:
        if condition is not None:
            raise ValueError("this model is unconditional: condition must be None")
        return None
    if condition is None:
        return rng.randint(num_classes, (n,), generator).to(device)
    y = torch.as_tensor(condition, dtype=torch.long)
    if y.ndim == 0:
        y = y.expand(n)
    if y.shape != (n,):
        raise FieldError("condition", f"must be an int or {n} labels, got shape {list(y.shape)}")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise FieldError("labels", f"must be in [0, {num_classes - 1}], got {y.tolist()[:8]}")
    return y.to(device)


class GenerativeModel(nn.Module):
    """Base class of every family; see DESIGN.md for the protocol.

    Subclasses set ``config_class`` and ``family`` and implement
    :meth:`losses` and :meth:`sample`; they override :meth:`param_groups`
    when several optimizers train disjoint parameter sets, set
    ``sample_options`` to their options dataclass, and override
    :meth:`log_likelihood` together with :meth:`describe_likelihood` when the
    family has one. What else a family can do is declared by the capability
    classes it inherits (``genforge.models.capabilities``), never probed.
    """

    config_class: ClassVar[type[ModelConfig]]
    family: ClassVar[str]
    sample_options: ClassVar[type[SampleOptions]] = SampleOptions
    parent_roles: ClassVar[tuple[str, ...]] = ()  # runs this family stands on (``autoencoder`` …), by role
    optional_parent_roles: ClassVar[tuple[str, ...]] = ()  # runs it may stand on (a frozen ``text_encoder``)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.__dict__["_parents"] = {}  # not submodules: their weights stay in their own runs

    # ---- runs built on runs
    @property
    def parents(self) -> dict[str, GenerativeModel]:
        """The loaded models of the runs this one stands on, by role (frozen, eval mode)."""
        return self.__dict__["_parents"]

    def attach_parents(self, parents: dict[str, GenerativeModel]) -> None:
        """Give the model the runs it stands on (``models.build``/``models.load`` call this once, after
        ``__init__``). They are not submodules: ``state_dict`` and the checkpoints hold this model's own
        weights only, optimizers never see theirs, and they move with ``.to()``.

        Raises:
            ValueError: roles missing or unknown to the family (naming them).
        """
        check_parent_roles(type(self), parents)
        for model in parents.values():
            model.eval().requires_grad_(False)
        self.__dict__["_parents"] = dict(parents)

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - nn.Module's signature
        super()._apply(fn, recurse)
        for model in self.parents.values():
            model._apply(fn, recurse)
        return self

    @property
    def task(self) -> str:
        """The kind of data this family models (``image``, ``text``)."""
        return type(self.config).task

    def parse_sample_options(self, options: dict[str, Any] | SampleOptions | None = None) -> SampleOptions:
        """Validate ``options`` into this family's :attr:`sample_options` dataclass.

        Raises:
            ConfigError: an unknown option (naming it, the closest valid one and all
                valid ones), a wrong type or an out-of-range value.
        """
        if isinstance(options, self.sample_options):
            return options
        return from_dict(self.sample_options, dict(options or {}), prefix="sample")

    def accepted_conditions(self) -> tuple[str, ...]:
        """Kinds of condition ``sample`` takes (``label``, ``text``, ``image``, ``mask``;
        :mod:`genforge.models.conditions`); () for an unconditional model. By default a class-conditional
        image model takes a ``label``; a family that takes others overrides this."""
        from genforge.models.capabilities import ImageModel, LanguageModel

        if isinstance(self, LanguageModel):
            return ("text",)  # the prompt, encoded by the run's tokenizer
        return ("label",) if isinstance(self, ImageModel) and self.num_classes else ()

    def required_conditions(self) -> tuple[str, ...]:
        """Kinds of condition ``sample`` cannot do without (super-resolution needs its ``image``)."""
        return ()

    def readable_prompt(self, caption: str) -> str:
        """A data set's caption as this model can take it as a prompt (a text-to-image model keeps the words
        its vocabulary knows); evaluation conditions on reference captions through it. Default: as is."""
        return caption

    def check_condition(self, condition: Any) -> None:
        """Refuse, before any work, a condition of an accepted kind that this model still cannot take (a
        prompt with a word its text encoder never saw): a ``FieldError`` naming the part. Default: none."""

    def capabilities(self) -> tuple[str, ...]:
        """Names of what this model can do, for listings (e.g. ``/v1/models``): declared, not probed."""
        from genforge.models.capabilities import declared_capabilities

        return declared_capabilities(self)

    # ---- export
    export_formats: ClassVar[tuple[str, ...]] = ("hf",)  # what ``genforge export`` can write for this family

    def onnx_graphs(self) -> OnnxGraphs:
        """The graphs ``genforge export --format onnx`` writes: name → (module, example inputs, input names,
        output names, dynamic axes). The default raises: the family has no ONNX export."""
        raise ValueError(f"family {self.family} cannot be exported to ONNX; formats it supports: "
                         f"{', '.join(self.export_formats)}")

    # ---- training
    def losses(self, batch: Batch, *, groups: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """Scalar losses keyed by parameter group.

        Args:
            batch: ``{"x": uint8 [B, C, H, W], "y": int64 [B]}`` for images.
            groups: compute only these groups' losses (the trainer asks for one
                group at a time); ``None`` computes all.
        """
        raise NotImplementedError

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters trained by each loss, in update order; default one group ``loss``."""
        return {"loss": [p for p in self.parameters() if p.requires_grad]}

    # ---- generation and likelihood
    @torch.no_grad()
    def sample(self, n: int, *, condition: Any = None, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """Generate ``n`` samples (images: float32 [n, C, H, W] in [0, 1])."""
        raise NotImplementedError

    def describe_likelihood(self, **options: Any) -> Likelihood | None:
        """What :meth:`log_likelihood` computes with these ``options``; None when the family has no likelihood."""
        return None

    def log_likelihood(self, batch: Batch, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """Per-example log-likelihood in nats, float [B] (see :meth:`describe_likelihood` for what it is).

        Args:
            batch: a training batch of the family's kind.
            generator: CPU RNG for families whose likelihood draws samples (ignored by the others).
            options: family-specific settings (e.g. a VAE's ``k`` importance samples).
        """
        raise NotImplementedError(f"the {self.family} family has no tractable likelihood")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---- save / load
    def save_pretrained(self, directory: str | Path, *, run_config: dict[str, Any] | None = None) -> None:
        """Write ``config.yaml`` and ``model.safetensors`` into ``directory``.

        ``run_config`` (the resolved recipe) is stored beside the model section;
        without it only ``model`` and ``genforge_version`` are written. Both
        files are written to temporaries first and renamed, so an existing
        model is never left half-overwritten.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data = dict(run_config or {})
        data["model"] = to_dict(self.config)
        data["genforge_version"] = __version__
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_model(self, str(tmp), metadata={"family": self.family, "genforge_version": __version__})
        atomic_write_text(directory / CONFIG_FILE, yaml.safe_dump(data, sort_keys=False))

    def load_weights(self, path: str | Path) -> None:
        """Load safetensors weights strictly (every key present, no extras, same shapes).

        Raises:
            FileNotFoundError: there is no file at ``path``.
            InvalidWeightsFile: the file cannot be read as safetensors (0 bytes, garbage, truncated).
            ValueError: its keys or shapes do not match this model.
        """
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} not found")
        try:
            missing, unexpected = load_model(self, str(path), strict=False)
        except SafetensorError as e:
            raise InvalidWeightsFile(f"{path} is not a valid safetensors file ({_first_line(e)})") from None
        except RuntimeError as e:  # torch reports shape mismatches as RuntimeError
            raise ValueError(f"{path} does not match this {self.family} model: {_first_line(e)}") from None
        except (OSError, ValueError, TypeError, KeyError, OverflowError) as e:  # anything else that reads garbage
            raise InvalidWeightsFile(f"{path} is not a valid safetensors file "
                                     f"({type(e).__name__}: {_first_line(e)})") from None
        if missing or unexpected:
            raise ValueError(f"{path} does not match this {self.family} model: "
                             f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")


# ---- weight checks
class InvalidWeightsFile(ValueError):
    """A weights file that cannot be read as safetensors (empty, garbage, truncated)."""


class NonFiniteWeights(ValueError):
    """Weights holding NaN or Inf (a diverged run): every sample would be garbage."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    line = text.splitlines()[0].strip() if text else type(e).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def non_finite_tensors(module: nn.Module) -> tuple[list[str], int]:
    """Names of ``module``'s floating-point tensors (parameters and buffers) holding NaN or Inf, and how
    many floating-point tensors there are."""
    bad, total = [], 0
    for name, t in module.state_dict().items():
        if t.is_floating_point() or t.is_complex():
            total += 1
            if not bool(torch.isfinite(t).all()):
                bad.append(name)
    return bad, total


def check_finite_weights(module: nn.Module, path: str | Path) -> None:
    """Raise :class:`NonFiniteWeights` when any floating tensor of ``module`` (loaded from ``path``) is not finite."""
    bad, total = non_finite_tensors(module)
    if bad:
        raise NonFiniteWeights(f"{path} holds non-finite weights in {len(bad)} of {total} tensors "
                               f"(first: {bad[0]}); the run diverged — resume from an earlier checkpoint")
