"""The text side of a text-to-image model: a word tokenizer over the training captions and a small
transformer that encodes a caption into a sequence of vectors for cross-attention.

The vocabulary is the set of words of the training captions (lower case; words are runs of letters and
digits, and ``&``), saved in the model's config, so a run encodes prompts with nothing but its own
files. Ids: 0 padding, 1 a word outside the vocabulary (only ever from held-out captions read with
``strict=False``), 2 the empty caption (what classifier-free guidance conditions on when it drops the
caption, and an empty negative prompt), then the words in sorted order.

Shape legend: n captions, L tokens (``text_len``), D width.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genforge.config import FieldError, did_you_mean
from genforge.models import rng
from genforge.models.layers import group_norm
from genforge.models.conditions import Condition

__all__ = ["Captioned", "WordTokenizer", "TextEncoder", "words_of", "PAD", "UNKNOWN", "EMPTY"]

PAD, UNKNOWN, EMPTY = 0, 1, 2
SPECIAL = 3
_WORD = re.compile(r"[^\W_]+|&")


def words_of(text: str) -> list[str]:
    """A caption's words: lower-cased runs of letters/digits, and ``&`` ("Cat face — Animals & Nature"
    → ["cat", "face", "animals", "&", "nature"])."""
    return _WORD.findall(text.lower())


class WordTokenizer:
    """Captions → int64 [n, L] ids over a fixed word list (see the module docstring for the ids)."""

    def __init__(self, words: list[str], length: int) -> None:
        if length < 1:
            raise ValueError(f"text_len must be >= 1, got {length}")
        self.words, self.length = list(words), int(length)
        self.index = {w: SPECIAL + i for i, w in enumerate(self.words)}

    @property
    def vocab_size(self) -> int:
        return SPECIAL + len(self.words)

    @classmethod
    def fit(cls, captions: list[str], max_length: int) -> WordTokenizer:
        """The sorted words of ``captions``; the length is the longest caption's word count, at most
        ``max_length``."""
        split = [words_of(c) for c in captions]
        return cls(sorted({w for ws in split for w in ws}), min(max_length, max(1, *map(len, split))))

    def empty(self, n: int) -> Tensor:
        """``n`` empty captions, int64 [n, L] (what :meth:`encode` gives for ""): what guidance conditions on
        when there is no caption."""
        out = torch.zeros(n, self.length, dtype=torch.long)
        out[:, 0] = EMPTY
        return out

    def encode(self, texts: list[str] | tuple[str, ...], *, strict: bool = True, field: str = "prompt") -> Tensor:
        """Captions → int64 [n, L], padded with 0; a caption with no word is the empty caption.

        Args:
            strict: refuse (FieldError on ``field``) a word outside the vocabulary or more than L words;
                when False those become the unknown id and the caption is cut at L words.
        """
        out = torch.zeros(len(texts), self.length, dtype=torch.long)
        for row, text in enumerate(texts):
            words = words_of(text)
            if strict:
                self._check(text, words, field)
            ids = [self.index.get(w, UNKNOWN) for w in words[: self.length]] or [EMPTY]
            out[row, : len(ids)] = torch.tensor(ids)
        return out

    def _check(self, text: str, words: list[str], field: str) -> None:
        unknown = [w for w in dict.fromkeys(words) if w not in self.index]
        if unknown:
            hint = did_you_mean(unknown[0], self.words, cutoff=0.7)
            raise FieldError(field, f"{text!r} has word(s) the model never saw in a caption: "
                                       f"{', '.join(map(repr, unknown[:8]))}{hint} (its vocabulary holds "
                                       f"{len(self.words)} words)")
        if len(words) > self.length:
            raise FieldError(field, f"{text!r} has {len(words)} words; this model reads at most {self.length}")


class TextEncoder(nn.Module):
    """Token + position embeddings and pre-norm transformer layers: ids int64 [n, L] → ([n, L, D] token
    vectors, bool [n, L] key mask (True = a token to attend to), [n, D] mean of the attended vectors)."""

    def __init__(self, vocab_size: int, length: int, width: int, layers: int, heads: int = 4) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, width)
        self.position = nn.Parameter(torch.zeros(length, width))
        nn.init.normal_(self.position, std=0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        keep = ids != PAD  # [n, L]; every caption has at least one token (the empty caption is id 2)
        h = self.token(ids) + self.position[: ids.shape[1]]  # [n, L, D]
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=~keep)
        h = self.norm(h)
        w = keep.to(h.dtype).unsqueeze(-1)  # [n, L, 1]
        pooled = (h * w).sum(1) / w.sum(1)  # [n, D]
        return h, keep, pooled


class CrossAttention(nn.Module):
    """Image positions attend to text tokens, residual: x [B, W, S, S], context [B, L, D], keep bool [B, L]
    → [B, W, S, S]. Heads split W; keys and values are projections of the context."""

    def __init__(self, width: int, context: int, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads if width % heads == 0 else 1
        self.norm = group_norm(width)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(context, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: Tensor, context: Tensor, keep: Tensor) -> Tensor:
        b, w, s, _ = x.shape
        h, d = self.heads, w // self.heads
        q = self.q(self.norm(x).flatten(2).transpose(1, 2))  # [B, S·S, W]
        k, v = self.kv(context).chunk(2, dim=-1)  # [B, L, W] each
        q, k, v = (t.reshape(b, -1, h, d).transpose(1, 2) for t in (q, k, v))  # [B, h, ·, d]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])  # [B, h, S·S, d]
        y = self.out(y.transpose(1, 2).reshape(b, s * s, w))  # [B, S·S, W]
        return x + y.transpose(1, 2).reshape(b, w, s, s)


class Captioned:
    """The caption side of a text-to-image family whose ``config.prompted`` is set: it holds ``tokenizer``
    (a :class:`WordTokenizer` of ``config.text_words``) and reads prompts, batch captions and data set
    captions through it. Rows of caption ids are int64 [n, L]."""

    def readable_prompt(self, caption: str) -> str:
        if not self.prompted:
            return caption
        known = [w for w in words_of(caption) if w in self.tokenizer.index][: self.tokenizer.length]
        return " ".join(known)

    def check_condition(self, condition: Any) -> None:
        if self.prompted and isinstance(condition, Condition) and condition.text is not None:
            self.tokenizer.encode(list(condition.text))  # words outside the vocabulary, too many words

    def _batch_text(self, batch: dict[str, Tensor], b: int) -> Tensor:
        """A prompted model's batch captions: int64 [B, L] ids in the vocabulary."""
        ids = batch.get("text")
        if ids is None:
            raise ValueError("a text-to-image diffusion model needs captions: the batch has no 'text'")
        ids = torch.as_tensor(ids).to(self.device, torch.long)
        if ids.shape != (b, self.config.text_len) or int(ids.min()) < 0 or int(ids.max()) >= self.tokenizer.vocab_size:
            raise ValueError(f"batch 'text' must be {b} × {self.config.text_len} caption ids in "
                             f"[0, {self.tokenizer.vocab_size - 1}], got {list(ids.shape)}")
        return ids

    def _prompt_ids(self, n: int, condition: Any, generator: rng.Generator) -> Tensor:
        """Caption ids int64 [n, L]: the condition's prompts (one, or one per row; unknown words refused), or
        with none the config's ``sample_prompts`` in turn from a seeded start."""
        text = condition.text if isinstance(condition, Condition) else None
        if condition is not None and text is None:
            raise FieldError("condition", "a text-to-image model takes a prompt (Condition(text=...)), not a label")
        if text is None:
            prompts = self.config.sample_prompts or [""]
            start = int(rng.randint(len(prompts), (1,), generator)[0]) if len(prompts) > 1 else 0
            text = tuple(prompts[(start + i) % len(prompts)] for i in range(n))
        elif len(text) == 1:
            text = tuple(text) * n
        if len(text) != n:
            raise FieldError("prompt", f"must be one prompt or {n}, got {len(text)}")
        return self.tokenizer.encode(list(text)).to(self.device)


class TextGraph(nn.Module):
    """ONNX graph of a prompted model's caption side: ids int64 [n, L] → (tokens [n, L, D], keep bool [n, L],
    the pooled caption's embedding [n, E] that is added to the denoiser's time embedding)."""

    def __init__(self, text: TextEncoder, pool: nn.Linear) -> None:
        super().__init__()
        self.text, self.pool = text, pool

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        tokens, keep, pooled = self.text(ids)
        return tokens, keep, self.pool(pooled)


class PromptedDenoiser(nn.Module):
    """ONNX graph of a prompted denoiser (a U-Net or DiT with ``embed`` and ``trunk``): (x_t [B, C, S, S],
    t float [B], tokens [B, L, D], keep bool [B, L], caption embedding [B, E]) → prediction [B, C, S, S]."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, t: Tensor, tokens: Tensor, keep: Tensor, caption: Tensor) -> Tensor:
        return self.net.trunk(x, self.net.embed(t, None) + caption, (tokens, keep))


def prompted_graphs(model: Any, space: tuple[int, int, int]) -> dict[str, tuple]:
    """``text_encoder`` and ``denoiser`` graphs of a prompted diffusion model whose denoiser works on ``space``
    (C, S, S): guidance runs the denoiser twice, once on the empty caption (:meth:`WordTokenizer.empty`)."""
    ids = model.tokenizer.encode(list(model.config.sample_prompts[:1] or [""]) * 2).to(model.device)
    with torch.no_grad():
        tokens, keep, pooled = model.text(ids)
        caption = model.text_pool(pooled)
    x = torch.randn(2, *space, device=model.device)
    t = torch.tensor([1.0, float(model.config.timesteps // 2)], device=model.device)
    batch = {0: "batch"}
    text_axes = {"ids": batch, "tokens": batch, "keep": batch, "caption": batch}
    den_axes = {"x_t": batch, "t": batch, "tokens": batch, "keep": batch, "caption": batch, "output": batch}
    return {"text_encoder": (TextGraph(model.text, model.text_pool), (ids,), ["ids"], ["tokens", "keep", "caption"],
                             text_axes),
            "denoiser": (PromptedDenoiser(model.net), (x, t, tokens, keep, caption),
                         ["x_t", "t", "tokens", "keep", "caption"], ["output"], den_axes)}
