"""What a family can do beyond ``losses``/``sample``, declared by inheriting these classes.

Evaluation, sampling and serving ask ``isinstance(model, Reconstructs)`` or
``model.describe_likelihood()``; they never look for methods with ``hasattr``
or inspect signatures. A family declares a capability by inheriting its class
(``class VAE(GenerativeModel, ImageModel, Reconstructs)``) and implementing its
methods.

- :class:`ImageModel`: samples are images float32 ``[n, C, S, S]`` in [0, 1];
  ``num_classes`` labels condition it (0 = unconditional).
- :class:`Reconstructs`: maps images through an encoder and back (MSE/PSNR/SSIM).
- :class:`LanguageModel`: per-token likelihood and one decoder over token ids
  (prefill / decode / window rule, driven by :mod:`genforge.models.decoding`),
  with the decoding options of :class:`LanguageModelOptions`.
- :class:`LatentSpace`: samples are a deterministic rendering of Gaussian latents
  (GAN/VAE ``z``, a diffusion model's initial noise): interpolation walks them.
- :class:`Inverts`: real images map back to latents (VAE encoder, ODE inversion).
- :class:`Inpaints`: masked pixels are filled in and the known ones kept.
- :class:`ImageConditioned`: generates from a source image; says how real images become sources and
  which baseline it must beat (previews and evaluation use only this).
- :class:`Upscales`: low-resolution images are turned into high-resolution ones.
- :class:`EditsImages`: img2img: a source image (``Condition(image=…, strength=…)``) is noised to a
  strength and regenerated under a new condition.
- :class:`EmbedsTextAndImages`: an encoder, not a generator: images and captions map to one embedding
  space (a CLIP-style run other runs stand on as ``parents.text_encoder``); its ``sample`` refuses.

Conditional image models take labels as int64 ``[B]`` or, where rendering
latents, as class weights float ``[B, K]`` (rows summing to 1: a soft label
that interpolates between classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from genforge.config import FieldError
from genforge.models import rng
from genforge.models.native import sampling
from genforge.models.base import Batch, SampleOptions

if TYPE_CHECKING:
    from genforge.models.base import GenerativeModel


class ImageModel:
    """An image family: its config is an ``ImageModelConfig`` (channels, image_size, conditional, num_classes)."""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, S, S) of the images it generates."""
        c = self.config
        return (c.channels, c.image_size, c.image_size)

    @property
    def num_classes(self) -> int:
        """Number of class labels it is conditioned on; 0 for an unconditional model."""
        return self.config.num_classes if self.config.conditional else 0

    @property
    def class_names(self) -> list[str]:
        """Names of labels 0..K-1 recorded at training (empty when unconditional or none were recorded)."""
        return list(self.config.class_names) if self.num_classes else []


class Reconstructs:
    """A family with an encoder: images can be reconstructed through it."""

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """uint8 images [B, C, S, S] (+ labels [B] for a conditional model) → float32 [B, C, S, S] in [0, 1]."""
        raise NotImplementedError


class LatentSpace:
    """Samples are ``render(z, y)`` of latents drawn by ``draw_latents``; ``sample`` is exactly that
    (plus any sampler noise), so a seed's latents render to that seed's sample."""

    def draw_latents(self, n: int, condition: Any = None,
                     generator: rng.Generator = None) -> tuple[Tensor, Tensor | None]:
        """The labels and latents ``sample(n, condition=..., generator=...)`` starts from, drawn in its
        order: (z float32 [n, ...] standard normal, labels int64 [n] or None)."""
        raise NotImplementedError

    def render(self, z: Tensor, y: Tensor | None = None, **options: Any) -> Tensor:
        """Latents z [n, ...] (+ labels int64 [n] or class weights float [n, K]) → images float32
        [n, C, S, S] in [0, 1], deterministically (options that would add noise are refused)."""
        raise NotImplementedError


class Inverts(LatentSpace):
    """Real images map to latents that render back to (approximately) them."""

    def invert(self, x: Tensor, y: Tensor | None = None, *, refine: int = 0, **options: Any) -> Tensor:
        """Images float32 [B, C, S, S] in [0, 1] (+ labels [B]) → latents [B, ...] for :meth:`render`.
        ``refine``: fixed-point refinements of each step of an iterative inversion (0 = one explicit step;
        an exact encoder ignores it)."""
        raise NotImplementedError


class Inpaints:
    """Fills the masked pixels of images, consistent with the known ones.

    ``inpaint_options`` is the family's options dataclass (steps, restarts, ...), parsed like sample
    options from plain values (:meth:`parse_inpaint_options`)."""

    inpaint_options: ClassVar[type[SampleOptions]] = SampleOptions
    inpaint_method: ClassVar[str] = ""  # one line naming the method, stored with every result

    def parse_inpaint_options(self, options: Any = None) -> SampleOptions:
        from genforge.config import from_dict

        if isinstance(options, self.inpaint_options):
            return options
        return from_dict(self.inpaint_options, dict(options or {}), prefix="inpaint")

    def inpaint(self, x: Tensor, fill: Tensor, *, condition: Any = None, generator: rng.Generator = None,
                **options: Any) -> Tensor:
        """Images float32 [B, C, S, S] in [0, 1] and ``fill`` bool [B, 1, S, S] (True = restore this pixel;
        the values under it are ignored) → float32 [B, C, S, S] in [0, 1]. ``condition``: None (the model
        is used unconditionally), an int or B labels. Known pixels come back as given."""
        raise NotImplementedError


class ImageConditioned:
    """Generates from a source image (``Condition(image=...)``): super-resolution, image-to-image.

    Previews and evaluation need no knowledge of the family: real images become sources through
    :meth:`make_source` for each of :meth:`source_variants`, the model's output is compared with the real
    image, and with :meth:`baseline`, the simple method it must beat."""

    def source_variants(self) -> tuple[str, ...]:
        """Names of the ways a real image becomes a source (``x4``, ``x2`` for super-resolution)."""
        raise NotImplementedError

    def make_source(self, x: Tensor, variant: str) -> Tensor:
        """Real images uint8 [B, C, S, S] → the source images of ``variant``, uint8 [B, C, s, s]."""
        raise NotImplementedError

    def baseline(self, source: Tensor) -> tuple[str, Tensor]:
        """(method name, images uint8 [B, C, S, S]) of the baseline for sources uint8 [B, C, s, s]."""
        raise NotImplementedError

    def check_source(self, image: Tensor, what: str = "the image") -> None:
        """Refuse a source image [C, H, W] the model cannot take (``ValueError`` naming what it takes)."""

    def source_images(self, condition: Any, n: int, *, does: str, hint: str) -> Tensor:
        """The ``n`` source images of ``condition`` (a ``Condition`` whose ``image`` is uint8 or float in
        [0, 1], [n, C, s, s]); ``ValueError`` when there are none ("a superres model {does} the images you
        give it …", then ``hint``) or not ``n``."""
        from genforge.models.conditions import Condition

        image = condition.image if isinstance(condition, Condition) else None
        if image is None:
            raise ValueError(f"a {self.family} model {does} the images you give it; it draws nothing from noise "
                             f"alone (give a source image: {hint}, condition=Condition(image=…))")
        if image.shape[0] != n:
            raise ValueError(f"condition must hold {n} source images, got {image.shape[0]}")
        return image


class Upscales(ImageConditioned):
    """Super-resolution: a low-resolution image in, the model's image size out."""

    @property
    def upscale_factors(self) -> tuple[int, ...]:
        """The factors f it was trained for: inputs of side ``image_size / f``."""
        raise NotImplementedError

    def upscale(self, low: Tensor, *, generator: rng.Generator = None, **options: Any) -> Tensor:
        """Low-resolution images float32 [B, C, s, s] in [0, 1] (s = S / f for a trained factor f) →
        float32 [B, C, S, S] in [0, 1]."""
        raise NotImplementedError


MAX_NEW_TOKENS = 1_000_000


class EditsImages:
    """img2img (SDEdit): ``sample(n, condition=Condition(image=x, strength=s, label=… or text=…))`` regenerates
    the sources x (uint8 or float in [0, 1], the model's shape) from the level ``s`` of the way to noise;
    s = 0 returns them, s = 1 ignores them (the same as sampling the condition, seed for seed)."""


class EmbedsTextAndImages:
    """Images and captions in one embedding space (CLIP-style); the family does not generate: ``sample`` raises
    :class:`NotGenerative`, and its training previews rank real images for the run's prompts instead.

    ``text_tower`` is what a text-to-image run standing on it (``parents.text_encoder``) reads captions with:
    caption ids int64 [n, L] → (token vectors [n, L, D], keep bool [n, L], pooled [n, D])."""

    text_tower: Any
    tokenizer: Any

    def embed_images(self, x: Tensor) -> Tensor:
        """uint8 images [N, C, S, S] → L2-normalised embeddings float32 [N, E]."""
        raise NotImplementedError

    def embed_texts(self, ids: Tensor) -> Tensor:
        """Caption ids int64 [N, L] → L2-normalised embeddings float32 [N, E]."""
        raise NotImplementedError


class NotGenerative(ValueError):
    """Raised by ``sample`` of a family that only encodes (:class:`EmbedsTextAndImages`)."""


@dataclass(kw_only=True)
class LanguageModelOptions(SampleOptions):
    """Decoding options every language model takes (``genforge sample`` flags and ``sample.*`` keys).

    Attributes:
        max_new_tokens: tokens generated per sample.
        temperature: divides the logits; 0 = greedy (argmax).
        top_k: sample only among the k most likely tokens (None = all).
        top_p: sample only within the smallest set of tokens of probability p (None = all).
    """

    max_new_tokens: int = 500
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise FieldError("max_new_tokens", f"must be in [0, {MAX_NEW_TOKENS}], got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise FieldError("temperature", f"must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise FieldError("top_k", f"must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise FieldError("top_p", f"must be in (0, 1], got {self.top_p}")

    def decoding(self) -> dict[str, Any]:
        """The options that shape each step (everything but ``max_new_tokens``), as keyword arguments."""
        return {k: v for k, v in vars(self).items() if k != "max_new_tokens"}


class LanguageModel:
    """A family over token ids: exact next-token likelihoods and one decoder over a cache of slots.

    The decoder is three calls and a rule, which :class:`~genforge.models.decoding.DecodeLoop` drives for
    every text path (one request or many, PyTorch or an exported graph): :meth:`new_slots` makes the
    cache, :meth:`prefill` encodes a window into some slots, :meth:`decode` appends one token to each
    of some slots, and :meth:`window_start` says which window of a sequence the model sees.
    """

    sample_options: ClassVar[type[LanguageModelOptions]] = LanguageModelOptions

    @property
    def vocab_size(self) -> int:
        return int(self.config.vocab_size)

    @property
    def context_length(self) -> int:
        """Tokens of context the model sees at once (windows for held-out likelihood)."""
        raise NotImplementedError

    def token_nll(self, batch: Batch) -> Tensor:
        """Per-token negative log-likelihood in nats: ``{"x": int64 [B, T+1]}`` → float32 [B, T]."""
        raise NotImplementedError

    def window_start(self, length: int, start: int | None) -> int:
        """Where the window the model sees of a sequence of ``length`` tokens begins.

        ``start`` is where it began at the previous step, or None for a new prompt. Returning ``start``
        keeps the window (the next token is decoded into the cache); any other value moves it, and the
        window ``ids[start:length]`` is encoded again with :meth:`prefill`.
        """
        raise NotImplementedError

    def new_slots(self, slots: int) -> Any:
        """A decoding state (cache) for ``slots`` independent sequences (:meth:`prefill` / :meth:`decode`)."""
        raise NotImplementedError

    def prefill(self, ids: Tensor, cache: Any, slots: Tensor) -> Tensor:
        """Encode windows ``ids`` int64 [n, P] into ``slots`` int64 [n] of ``cache`` (replacing what they held)
        → next-token logits float32 [n, V]."""
        raise NotImplementedError

    def decode(self, tokens: Tensor, cache: Any, slots: Tensor) -> Tensor:
        """Append one token per slot (int64 [B] to slots int64 [B], each at its own length) → logits float32 [B, V].

        Continuous batching: sequences join (:meth:`prefill`) and leave between calls.
        """
        raise NotImplementedError

    def runs_ahead(self, cache: Any) -> bool:
        """Whether :meth:`decode_run` works on ``cache`` (a model that fuses steps says so; the default: no)."""
        return False

    def decode_run(self, token: Tensor, cache: Any, slot: Tensor, n: int, temperature: float, u: Tensor) -> Tensor:
        """``n`` :meth:`decode` steps of one slot in one call, each drawing its token as :func:`next_tokens`
        does with no filter (from uniform ``u[i]`` of float32 [n] at ``temperature``, argmax at 0) and appending
        it: ``token`` int64 [1] first → the n tokens drawn, int64 [n]. Only where :meth:`runs_ahead`."""
        raise NotImplementedError


def _filter_logits(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """Mask all but the ``top_k`` largest logits and the smallest nucleus of mass ``top_p``: [B, V] → [B, V]."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum - sorted_logits.softmax(dim=-1) >= top_p  # mass before this token already ≥ top_p
        drop[:, 0] = False  # always keep the most likely token
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


def _draw(probs: Tensor, generator: rng.Generator, u: Tensor | None = None) -> Tensor:
    """One token per row by inverse-CDF sampling: probs [B, V] (CPU) → int64 [B].

    Equivalent in distribution to ``torch.multinomial(probs, 1)`` (a token of
    probability 0 is never drawn) at a third of its cost for one row. ``u``:
    the rows' uniform numbers [B, 1] when already drawn from ``generator``.
    """
    cdf = probs.cumsum(dim=-1)  # (B, V)
    if u is None:
        u = rng.rand((probs.shape[0], 1), generator)
    u = u.to(cdf.dtype) * cdf[:, -1:]  # (B, 1)
    return (cdf < u).sum(dim=-1).clamp_max(probs.shape[-1] - 1)


def next_tokens(logits: Tensor, generator: rng.Generator, *, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None, allowed: Tensor | None = None) -> Tensor:
    """Choose the next token of each row: logits float [B, V] → int64 [B] on the logits' device.

    ``allowed`` (bool [B, V], optional) removes the other tokens first (e.g. those that would break
    UTF-8); each row must allow at least one. Temperature 0 is greedy (argmax); otherwise the logits
    are divided by the temperature, filtered by ``top_k`` / ``top_p`` and one token is drawn per row
    from ``generator`` (B uniform numbers, drawn on the CPU, so a seeded request gives the same tokens
    anywhere; with :class:`~genforge.models.rng.RowGenerators` each request's rows draw from its own
    generator).
    """
    if allowed is not None:
        logits = logits.masked_fill(~allowed.to(logits.device), float("-inf"))
    if temperature == 0:
        return logits.argmax(dim=-1)
    u = rng.rand((logits.shape[0], 1), generator)  # (B, 1)
    if allowed is None and top_k is None and (top_p is None or top_p >= 1.0) and logits.device.type == "cpu":
        tokens = sampling.draw(logits, temperature, u)  # the fused C draw, where it is built
        if tokens is not None:
            return tokens
    probs = _filter_logits(logits / temperature, top_k, top_p).softmax(dim=-1).cpu()
    return _draw(probs, generator, u).to(logits.device)


def declared_capabilities(model: GenerativeModel) -> tuple[str, ...]:
    """Names of ``model``'s declared capabilities, e.g. ``("sample", "conditional", "likelihood:bound")``."""
    names = ["embed"] if isinstance(model, EmbedsTextAndImages) else ["sample"]
    if isinstance(model, ImageModel) and model.num_classes:
        names.append("conditional")
    if isinstance(model, Reconstructs):
        names.append("reconstruct")
    if isinstance(model, LatentSpace):
        names.append("interpolate")
    if isinstance(model, Inverts):
        names.append("invert")
    if isinstance(model, Inpaints):
        names.append("inpaint")
    if isinstance(model, Upscales):
        names.append("upscale")
    if isinstance(model, EditsImages):
        names.append("img2img")
    if isinstance(model, LanguageModel):
        names += ["token_nll", "stream"]
    info = model.describe_likelihood()
    if info is not None:
        names.append(f"likelihood:{info.kind}")
    return tuple(names)
