"""The text sampling pipeline: load a run once, validate options, decode seeded samples, stream them.

    >>> pipe = TextPipeline.from_run("runs/shakespeare-char")
    >>> request, options = pipe.parse({"prompt": "ROMEO:", "temperature": 0.8, "stop": ["\n\n"]})
    >>> texts = pipe.generate(request, options, on_text=print_piece)

:meth:`TextPipeline.generate` encodes a prompt, decodes several samples in one
batch through the model's one decoder (:mod:`genforge.models.decoding`: the
request is one job of n rows, exactly as the serving engine runs it), turns
token ids back into text incrementally (holding back incomplete UTF-8 sequences and anything that could
still become a stop string; byte-level models only draw tokens that keep the
bytes valid UTF-8, so no U+FFFD appears), and can hand each new piece of text to a callback
as soon as it is final, which is how ``genforge sample RUN --prompt ...``
streams. ``genforge sample``, the trainer's periodic samples, ``genforge eval``
and the HTTP server all decode through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

import torch
from torch import Tensor

from genforge.config import FieldError
from genforge.data import Tokenizer, load_tokenizer
from genforge.io import atomic_write_text
from genforge.models import decoding
from genforge.models.base import WEIGHTS_FILE, GenerativeModel, eval_mode
from genforge.models.capabilities import LanguageModelOptions
from genforge.rundir import RunDir, check_output
from genforge.sampling.options import parse_options

TextCallback = Callable[[int, str], None]  # (sample index, newly final text)


def default_prompt(tokenizer: Tokenizer) -> str:
    """The prompt used when none is given: a newline (the start of a new line of text), or, for a char
    tokenizer whose corpus has no newline, a space, else the first character of its vocabulary."""
    for candidate in ("\n", " "):
        try:
            if tokenizer.encode(candidate):
                return candidate
        except ValueError:
            continue
    return tokenizer.decode([0])


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


MAX_SAMPLES = 10_000  # text samples generated in one batch
MAX_TOKENS = 1 << 26  # token ids held at once, n × (prompt + max_new_tokens): 512 MB of int64


@dataclass(kw_only=True)
class TextRequest:
    """What to generate, besides the model's decoding options.

    Attributes:
        prompt: text to continue (None = :func:`default_prompt`); every character must be encodable.
        n: samples, generated together in one batch.
        seed: seeds the sampler: same seed, same text.
        stop: a sample ends just before the first occurrence of any of these strings in its
            generated text (the stop string is not included).
    """

    prompt: str | None = None
    n: int = 1
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.n <= MAX_SAMPLES:
            raise FieldError("n", f"must be in [1, {MAX_SAMPLES}], got {self.n}")
        self.stop = tuple(self.stop)


class TextPipeline:
    """Seeded text generation from one loaded language model and its tokenizer (see the module docstring)."""

    task = "text"
    request_class = TextRequest

    def __init__(self, model: GenerativeModel, tokenizer: Tokenizer, *, name: str = "") -> None:
        if model.task != "text":
            raise ValueError(f"{name or 'this run'} holds a {model.family} model, not a language model")
        if tokenizer.vocab_size > model.vocab_size:  # ids the embedding lacks would fail inside a matmul
            raise ValueError(f"{name or 'this run'}: its tokenizer has {tokenizer.vocab_size} tokens but the model "
                             f"takes vocab_size={model.vocab_size}: the tokenizer does not belong to this model")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name or model.family

    @classmethod
    def from_run(cls, run_dir: str | Path, *, device: str = "cpu", weights: str = WEIGHTS_FILE) -> TextPipeline:
        """Load a text run's model (eval mode) and tokenizer once, for many calls."""
        from genforge.models import load  # every family; keep it off import paths

        run = RunDir(run_dir)
        if not run.tokenizer.is_file():
            raise FileNotFoundError(f"{run.tokenizer} not found: a text run keeps its tokenizer beside the model")
        tokenizer = load_tokenizer(run.path)
        model = load(run.path, weights=weights).to(device)
        return cls(model, tokenizer, name=run.path.resolve().name)

    def parse(self, options: dict[str, Any] | None = None) -> tuple[TextRequest, LanguageModelOptions]:
        """Validate ``options`` (request fields and the model's decoding options) in one go."""
        return parse_options(TextRequest, self.model.sample_options, options or {}, model=self.model,
                             name=self.name)

    @torch.no_grad()
    def generate(self, request: TextRequest, options: LanguageModelOptions | dict[str, Any] | None = None, *,
                 on_text: TextCallback | None = None, use_cache: bool = True) -> list[str]:
        """Generate ``request.n`` continuations of ``request.prompt``.

        Args:
            request: prompt, n, seed, stop strings.
            options: the model's decoding options (max_new_tokens, temperature, top_k, top_p);
                fewer tokens are generated when every sample stops early.
            on_text: called with (sample index, text) as soon as text is final.
            use_cache: False decodes without the key/value cache (a reference for tests).

        Returns:
            ``n`` strings: the prompt followed by its continuation.
        """
        opts = self.model.parse_sample_options(options)
        n, tokenizer = request.n, self.tokenizer
        prompt = default_prompt(tokenizer) if request.prompt is None else request.prompt
        if not prompt:
            raise ValueError("the prompt must not be empty (a language model needs at least one token to continue)")
        ids = tokenizer.encode(prompt)
        if not ids:
            raise ValueError(f"the prompt {prompt!r} encodes to no tokens")
        if n * (len(ids) + opts.max_new_tokens) > MAX_TOKENS:
            raise ValueError(f"{n} samples of {len(ids)} prompt + {opts.max_new_tokens} new tokens exceed the limit of "
                             f"{MAX_TOKENS} token ids in memory at once; lower n or max_new_tokens")
        prompt_ids = torch.tensor(ids, dtype=torch.long).unsqueeze(0).expand(n, -1)  # (n, P)
        decoders = [tokenizer.stream_decoder() for _ in range(n)]
        guard = tokenizer.utf8_guard(n, ids)  # byte-level tokenizers: only tokens that keep valid UTF-8
        filters = [_StopFilter(request.stop) for _ in range(n)]
        texts = [""] * n
        generator = torch.Generator().manual_seed(request.seed)

        def emit(i: int, piece: str) -> None:
            if piece:
                texts[i] += piece
                if on_text is not None:
                    on_text(i, piece)

        with eval_mode(self.model):
            steps = decoding.stream(self.model, prompt_ids, opts.max_new_tokens, generator=generator,
                                    use_cache=use_cache, token_mask=None if guard is None else guard.allowed,
                                    **opts.decoding())
            for tokens in steps:  # (n,)
                if guard is not None:
                    guard.advance(tokens)
                for i, t in enumerate(tokens.tolist()):
                    if not filters[i].done:
                        emit(i, filters[i].push(decoders[i].push([t])))
                if all(f.done for f in filters):
                    steps.close()
                    break
            for i in range(n):  # a sample cut off inside a character leaves that character out
                emit(i, filters[i].push(decoders[i].flush(incomplete="drop")))
                emit(i, filters[i].flush())
        return [prompt + t for t in texts]

    @torch.inference_mode()
    def continue_ids(self, prompt_ids: Tensor, options: LanguageModelOptions | dict[str, Any] | None = None, *,
                     seed: int = 0) -> Tensor:
        """Token-level continuation (no text round trip): int64 [B, P] → the new tokens int64 [B, max_new_tokens].

        Used where prompts are token windows of a corpus (BLEU of held-out continuations).
        """
        opts = self.model.parse_sample_options(options)
        generator = torch.Generator().manual_seed(seed)
        with eval_mode(self.model):
            steps = list(decoding.stream(self.model, prompt_ids, opts.max_new_tokens, generator=generator,
                                         **opts.decoding()))
        if not steps:
            return prompt_ids.new_empty(prompt_ids.shape[0], 0)
        return torch.stack(steps, dim=1).cpu()  # (B, max_new_tokens)

    def write(self, path: str | Path, request: TextRequest, options: LanguageModelOptions | None = None, *,
              step: int | None = None) -> Path:
        """Generate ``request`` and write the samples to ``path`` atomically.

        Training (``step`` given) writes a header line (run, step, seed, temperature) and
        ``--- sample i ---`` blocks; ``genforge sample -o`` writes ``--- sample i (seed S) ---`` blocks.
        """
        opts = self.model.parse_sample_options(options)
        texts = self.generate(request, opts)
        if step is not None:
            header = f"# {self.name} step {step}, seed {request.seed}, temperature {opts.temperature}"
            body = "\n".join(f"--- sample {i} ---\n{t}\n" for i, t in enumerate(texts))
            text = f"{header}\n{body}"
        else:
            text = "\n".join(f"--- sample {i} (seed {request.seed}) ---\n{t}" for i, t in enumerate(texts)) + "\n"
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        return path


    def sample_to(self, out: str | Path | None, request: TextRequest, options: LanguageModelOptions | None = None, *,
                  run_dir: str | Path | None = None, stream: TextIO, overwrite: bool = False) -> Path | None:
        """``genforge sample``: one sample without ``out`` streams to ``stream`` as it is decoded; several are
        printed as ``--- sample i (seed S) ---`` blocks; with ``out`` they are written there (returns the path;
        a run's own files, folders and, without ``overwrite``, existing files are refused first)."""
        if request.prompt is not None:
            self.tokenizer.encode(request.prompt)  # a prompt the tokenizer cannot encode fails before any output
        if out is not None:
            return self.write(check_output(out, overwrite=overwrite, command="sample"), request, options)
        if request.n > 1:
            texts = self.generate(request, options)
            stream.write("\n".join(f"--- sample {i} (seed {request.seed}) ---\n{t}" for i, t in enumerate(texts)) + "\n")
            return None

        def show(i: int, piece: str) -> None:
            stream.write(piece)
            stream.flush()

        if request.prompt is not None:
            stream.write(request.prompt)
        self.generate(request, options, on_text=show)
        stream.write("\n")
        return None


def generate_text(model: GenerativeModel, tokenizer: Tokenizer, prompt: str | None = None, *, n: int = 1,
                  max_new_tokens: int = 256, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, stop: Sequence[str] = (), seed: int = 0,
                  on_text: TextCallback | None = None, use_cache: bool = True) -> list[str]:
    """``n`` continuations of ``prompt``: :meth:`TextPipeline.generate` with these settings."""
    if max_new_tokens < 0:
        raise FieldError("max_new_tokens", f"must be >= 0, got {max_new_tokens}")
    pipe = TextPipeline(model, tokenizer)
    request = TextRequest(prompt=prompt, n=n, seed=seed, stop=tuple(stop))
    options = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k, "top_p": top_p}
    return pipe.generate(request, options, on_text=on_text, use_cache=use_cache)


def load_text_model(run_dir: str | Path, *, device: str = "cpu",
                    weights: str = WEIGHTS_FILE) -> tuple[GenerativeModel, Tokenizer]:
    """A text run's model (eval mode) and tokenizer, e.g. ``load_text_model("runs/shakespeare-char")``."""
    pipe = TextPipeline.from_run(run_dir, device=device, weights=weights)
    return pipe.model, pipe.tokenizer
