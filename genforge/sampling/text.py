"""Seeded text generation from a language model: prompts, stop strings, streaming.

``generate_text`` encodes a prompt, decodes several samples in one batch with
the model's key/value cache, turns token ids back into text incrementally
(holding back incomplete UTF-8 sequences and anything that could still become
a stop string), and can hand each new piece of text to a callback as soon as
it is final, which is how ``genforge sample RUN --prompt ...`` streams.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from genforge.data import Tokenizer, load_tokenizer
from genforge.models.base import GenerativeModel

TextCallback = Callable[[int, str], None]  # (sample index, newly final text)


def default_prompt(tokenizer: Tokenizer) -> str:
    """The prompt used when none is given: a newline (the start of a new line of text)."""
    return "\n"


class _StopFilter:
    """Incremental text of one sample, cut at the first stop string.

    ``push(text)`` returns the part that is final: text that can no longer be
    the start of a stop string. After a stop string appears, ``done`` is True
    and nothing more is returned.
    """

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.pending = ""
        self.done = False

    def push(self, text: str) -> str:
        if self.done:
            return ""
        self.pending += text
        cut = min((i for i in (self.pending.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            out, self.pending, self.done = self.pending[:cut], "", True
            return out
        n = len(self.pending) - self.hold
        out, self.pending = (self.pending[:n], self.pending[n:]) if n > 0 else ("", self.pending)
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.done else self.pending), ""
        return out


@torch.no_grad()
def generate_text(model: GenerativeModel, tokenizer: Tokenizer, prompt: str | None = None, *, n: int = 1,
                  max_new_tokens: int = 256, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, stop: Sequence[str] = (), seed: int = 0,
                  on_text: TextCallback | None = None, use_cache: bool = True) -> list[str]:
    """Generate ``n`` continuations of ``prompt``.

    Args:
        model: a language model with ``generate_stream`` (the gpt family).
        tokenizer: the run's tokenizer.
        prompt: text to continue (None = :func:`default_prompt`); every
            character must be encodable by the tokenizer.
        n: samples, generated together in one batch.
        max_new_tokens: tokens generated per sample (fewer when all samples stop early).
        temperature / top_k / top_p: sampling options (temperature 0 = greedy).
        stop: a sample ends just before the first occurrence of any of these
            strings in its generated text (the stop string is not included).
        seed: seeds the sampler: same seed, same text.
        on_text: called with (sample index, text) as soon as text is final.

    Returns:
        ``n`` strings: the prompt followed by its continuation.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    prompt = default_prompt(tokenizer) if prompt is None else prompt
    if not prompt:
        raise ValueError("the prompt must not be empty (a language model needs at least one token to continue)")
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError(f"the prompt {prompt!r} encodes to no tokens")
    prompt_ids = torch.tensor(ids, dtype=torch.long).unsqueeze(0).expand(n, -1)  # (n, P)
    decoders = [tokenizer.stream_decoder() for _ in range(n)]
    filters = [_StopFilter(stop) for _ in range(n)]
    texts = [""] * n
    generator = torch.Generator().manual_seed(seed)

    def emit(i: int, piece: str) -> None:
        if piece:
            texts[i] += piece
            if on_text is not None:
                on_text(i, piece)

    was_training = model.training
    model.eval()
    try:
        steps = model.generate_stream(prompt_ids, max_new_tokens, temperature=temperature, top_k=top_k,
                                      top_p=top_p, generator=generator, use_cache=use_cache)
        for tokens in steps:  # (n,)
            for i, t in enumerate(tokens.tolist()):
                if not filters[i].done:
                    emit(i, filters[i].push(decoders[i].push([t])))
            if all(f.done for f in filters):
                steps.close()
                break
        for i in range(n):
            emit(i, filters[i].push(decoders[i].flush()))
            emit(i, filters[i].flush())
    finally:
        model.train(was_training)
    return [prompt + t for t in texts]


def load_text_model(run_dir: str | Path, *, device: str = "cpu",
                    weights: str = "model.safetensors") -> tuple[GenerativeModel, Tokenizer]:
    """A text run's model (eval mode) and tokenizer, e.g. ``load_text_model("runs/shakespeare-char")``."""
    from genforge.models import load  # every family; keep it off import paths

    run_dir = Path(run_dir)
    if not (run_dir / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{run_dir / 'tokenizer.json'} not found: is {run_dir} a text run?")
    model = load(run_dir, weights=weights).to(device)
    if not hasattr(model, "generate_stream"):
        raise ValueError(f"{run_dir} holds a {model.family} model, not a language model")
    return model, load_tokenizer(run_dir)
