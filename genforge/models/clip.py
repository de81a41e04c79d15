"""A contrastive text–image encoder (CLIP, Radford et al. 2021) trained as its own run: the caption encoder
a text-to-image run can stand on, frozen (``parents: {text_encoder: RUN}``), instead of training its own
jointly.

Image tower: four conv stages (each: a conv, GroupNorm, SiLU, a conv, GroupNorm, SiLU; widths
``image_width`` × 1, 2, 4, 8; stride 2 down to a 4 × 4 map) → global mean → linear to the embedding width E. Text tower: the
:class:`~genforge.models.text_encoder.TextEncoder` a prompted diffusion model would otherwise train jointly
(same word tokenizer over the training captions, ``text_width`` × ``text_layers``) → its pooled vector →
linear to E. Both embeddings are L2-normalised; the loss is CLIP's symmetric InfoNCE with a learned
temperature (capped at 100, as CLIP does). In training, each batch is translated by up to ``shift`` of the side
(edge-padded; an offset per image from the global RNG).

The family encodes and does not generate: ``sample`` raises :class:`~genforge.models.capabilities.NotGenerative`.
Its training previews show, for the run's fixed prompts, the held-out images it ranks first.

Shape legend: B batch, C channels, S side, L caption tokens, D text width, E embedding width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genforge.config import FieldError
from genforge.models import rng
from genforge.models.base import (Batch, GenerativeModel, ImageModelConfig, OnnxGraphs, eval_mode,
                                  unpack_image_batch)
from genforge.models.capabilities import EmbedsTextAndImages, ImageModel, NotGenerative
from genforge.models.layers import group_norm
from genforge.models.text_encoder import Captioned, TextEncoder, WordTokenizer

__all__ = ["ClipConfig", "Clip", "conv_tower", "contrastive_loss", "MAX_LOGIT_SCALE"]

MAX_LOGIT_SCALE = 100.0
MIN_SIDE = 4  # the image tower stops halving at this side (GroupNorm over a 1 × 1 map overflows bf16 gradients)


@dataclass(kw_only=True)
class ClipConfig(ImageModelConfig):
    """The two towers; ``text_words`` / ``text_len`` come from the training captions (``prompted`` is required)."""

    family: str = "clip"
    prompted: bool = True
    width: int = 128  # E, the shared embedding width
    image_width: int = 32  # channels of the first conv stage (×2 per stage, at most ×8)
    text_width: int = 128  # D: what a text-to-image run standing on this one cross-attends to
    text_layers: int = 2
    heads: int = 4
    shift: float = 0.125  # training translations of up to this share of the side (0 = none)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family != "clip":
            raise FieldError("family", f"must be 'clip' for a ClipConfig, got {self.family!r}")
        if not self.prompted:
            raise FieldError("prompted", "a clip run learns from captions: it must be true (a captioned dataset)")
        for name in ("width", "image_width", "text_width"):
            if not 1 <= getattr(self, name) <= 4096:
                raise FieldError(name, f"must be in [1, 4096], got {getattr(self, name)}")
        if not 1 <= self.text_layers <= 48:
            raise FieldError("text_layers", f"must be in [1, 48], got {self.text_layers}")
        if self.heads < 1 or self.text_width % self.heads:
            raise FieldError("heads", f"must divide text_width {self.text_width}, got {self.heads}")
        if not 0.0 <= self.shift <= 0.5:
            raise FieldError("shift", f"must be in [0, 0.5], got {self.shift}")


def conv_tower(channels: int, width: int, side: int = 0, min_side: int = 1) -> tuple[nn.Sequential, int]:
    """Four conv stages of two convs each (the first conv of the first stage keeps the side, every other
    conv halves it while the side stays ≥ ``min_side`` × 2; ``side`` 0 = always halve): images [B, C, S, S] in
    [-1, 1] → features [B, W, s, s]; returns the stack and W (``width`` × 8)."""
    layers: list[nn.Module] = []
    w_in = channels
    for i in range(4):
        w_out = width * min(2 ** i, 8)
        strides = []
        for first in (True, False):
            halve = not (first and i == 0) and (not side or side >= 2 * min_side)
            strides.append(2 if halve else 1)
            side = side // 2 if halve and side else side
        layers += [nn.Conv2d(w_in, w_out, 3, stride=strides[0], padding=1), group_norm(w_out), nn.SiLU(),
                   nn.Conv2d(w_out, w_out, 3, stride=strides[1], padding=1), group_norm(w_out), nn.SiLU()]
        w_in = w_out
    return nn.Sequential(*layers), w_in


def contrastive_loss(images: Tensor, texts: Tensor, logit_scale: Tensor | float) -> Tensor:
    """CLIP's symmetric InfoNCE: pair i is the positive of row i and column i of the [N, N] similarity matrix
    of L2-normalised ``images`` [N, E] and ``texts`` [N, E] scaled by ``logit_scale`` (the inverse
    temperature); the mean of the image→text and text→image cross-entropies, in nats."""
    logits = logit_scale * images @ texts.T  # [N, N]
    target = torch.arange(images.shape[0], device=images.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _shift(x: Tensor, share: float) -> Tensor:
    """Each image translated by its own random offset of up to ``share`` of the side, edge-padded:
    [B, C, S, S] → same (offsets from the global training RNG, sharded by rank like all training noise)."""
    b, _, s, _ = x.shape
    m = int(share * s)
    if m < 1:
        return x
    d = rng.train_randint(0, 2 * m + 1, (b, 2), torch.device("cpu")).to(x.device)  # [B, 2]: (dx, dy)
    padded = F.pad(x, (m, m, m, m), mode="replicate")  # [B, C, S + 2m, S + 2m]
    idx = torch.arange(s, device=x.device)
    ys, xs = d[:, 1:] + idx, d[:, :1] + idx  # [B, S] each
    rows = torch.arange(b, device=x.device)[:, None, None]
    return padded[rows, :, ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2)  # [B, S, S, C] → [B, C, S, S]


class _ImageGraph(nn.Module):
    """Images float [B, C, S, S] in [0, 1] → embeddings [B, E] (the ONNX image encoder)."""

    def __init__(self, model: Clip) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model._images(x * 2 - 1)


class _TextGraph(nn.Module):
    """Caption ids int64 [B, L] → embeddings [B, E] (the ONNX text encoder)."""

    def __init__(self, model: Clip) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor) -> Tensor:
        return self.model._texts(ids)


class Clip(Captioned, GenerativeModel, ImageModel, EmbedsTextAndImages):
    """Image and caption towers in one embedding space; one parameter group ``loss``."""

    config_class: ClassVar[type[ClipConfig]] = ClipConfig
    family: ClassVar[str] = "clip"

    def __init__(self, config: ClipConfig) -> None:
        super().__init__(config)
        config.check_complete()
        self.config: ClipConfig = config
        self.prompted = True
        self.tokenizer = WordTokenizer(config.text_words, config.text_len)
        self.image_tower, w = conv_tower(config.channels, config.image_width, config.image_size, MIN_SIDE)
        self.image_head = nn.Linear(w, config.width)
        self.text_tower = TextEncoder(self.tokenizer.vocab_size, config.text_len, config.text_width,
                                      config.text_layers, config.heads)
        self.text_head = nn.Linear(config.text_width, config.width)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature 0.07

    def _images(self, x: Tensor) -> Tensor:
        """Images float [B, C, S, S] in [-1, 1] → [B, E] float32, normalised (the head in fp32 under autocast)."""
        h = self.image_tower(x).float().mean(dim=(2, 3))  # [B, W]
        with torch.autocast(h.device.type, enabled=False):
            return F.normalize(self.image_head(h), dim=-1)

    def _texts(self, ids: Tensor) -> Tensor:
        """Caption ids int64 [B, L] → [B, E] float32, normalised (the head in fp32 under autocast)."""
        h = self.text_tower(ids)[2].float()  # [B, D]
        with torch.autocast(h.device.type, enabled=False):
            return F.normalize(self.text_head(h), dim=-1)

    def losses(self, batch: Batch, *, groups: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """Symmetric InfoNCE of the batch's images against their captions (the other rows are the negatives)."""
        if groups is not None and set(groups) - {"loss"}:
            raise ValueError(f"unknown loss groups {sorted(set(groups) - {'loss'})}; the clip family has ['loss']")
        x, _ = unpack_image_batch(batch, self.config, self.device, "clip model")
        ids = self._batch_text(batch, x.shape[0])  # [B, L]
        x = x * 2 - 1
        if self.training and self.config.shift:
            x = _shift(x, self.config.shift)
        scale = self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        return {"loss": contrastive_loss(self._images(x), self._texts(ids), scale)}

    @torch.no_grad()
    def embed_images(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """uint8 images [N, C, S, S] → float32 [N, E], L2-normalised (eval mode)."""
        if x.dtype != torch.uint8:
            raise TypeError(f"embed_images takes uint8 images, got {x.dtype}")
        c, s = self.config.channels, self.config.image_size
        if tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(f"this clip run embeds images of shape [N, {c}, {s}, {s}], got {list(x.shape)}")
        with eval_mode(self):
            return torch.cat([self._images(x[i:i + batch_size].to(self.device).float() / 127.5 - 1).float()
                              for i in range(0, x.shape[0], batch_size)])

    @torch.no_grad()
    def embed_texts(self, ids: Tensor, batch_size: int = 256) -> Tensor:
        """Caption ids int64 [N, L] (from :attr:`tokenizer`) → float32 [N, E], L2-normalised (eval mode)."""
        with eval_mode(self):
            return torch.cat([self._texts(ids[i:i + batch_size].to(self.device)).float()
                              for i in range(0, ids.shape[0], batch_size)])

    export_formats: ClassVar[tuple[str, ...]] = ("onnx", "hf")

    def onnx_graphs(self) -> OnnxGraphs:
        """``image_encoder``: images float32 [B, C, S, S] in [0, 1] → embeddings [B, E]; ``text_encoder``: caption
        ids int64 [B, L] (from the config's ``text_words``) → embeddings [B, E]; both L2-normalised."""
        x = torch.rand(2, self.config.channels, self.config.image_size, self.config.image_size, device=self.device)
        prompts = (list(self.config.sample_prompts) + ["", ""])[:2]
        ids = self.tokenizer.encode(prompts, strict=False).to(self.device)  # [2, L]
        axes = {"images": {0: "batch"}, "ids": {0: "batch"}, "embeddings": {0: "batch"}}
        return {"image_encoder": (_ImageGraph(self), (x,), ["images"], ["embeddings"], axes),
                "text_encoder": (_TextGraph(self), (ids,), ["ids"], ["embeddings"], axes)}

    def accepted_conditions(self) -> tuple[str, ...]:
        return ()

    def sample(self, n: int, *, condition: Any = None, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        self.parse_sample_options(options)
        raise NotGenerative("a clip run encodes images and captions; it does not generate. Name it as the "
                            "text encoder of a text-to-image run: --set parents.text_encoder=RUN")

    def log_likelihood(self, batch: Batch, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        raise NotImplementedError("the clip family has no likelihood: it encodes, it does not generate")
