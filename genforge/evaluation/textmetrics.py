"""Text-run evaluation: held-out likelihood, sample diversity, and BLEU of continuations of held-out prompts.

Metrics (``--metrics`` names in brackets):

- [ppl] ``loss`` (nats per token), ``perplexity`` and ``bpc`` (bits per character)
  on the **whole** validation split (:func:`~genforge.evaluation.text.heldout_nll`):
  every token but the first is a target exactly once. Loss and perplexity are
  per token, so their protocol names the tokenizer; bits per character is the
  total code length of the split's characters, so its protocol does not, and
  ``compare`` ranks a char run against a BPE run of the same corpus split on it.
- [distinct] ``distinct_1`` / ``distinct_2``: distinct word n-grams / all word
  n-grams, pooled over ``n`` samples (words: whitespace-split; n-grams never
  cross samples). The numerator and denominator are stored in ``details``.
- [self_bleu] ``self_bleu``: mean sentence BLEU-4 of each sample against the
  others (Texygen's definition, NLTK smoothing 1), 0–100, lower = more diverse.
- [bleu] ``bleu``: corpus BLEU (sacrebleu, signature recorded) of **greedy**
  continuations of ``prompts`` held-out prompts of ``prompt_tokens`` tokens
  against the true next ``continuation_tokens`` tokens. Prompts are
  non-overlapping windows of the validation split chosen by a permutation
  seeded with ``reference_seed``.

Samples for distinct-n and self-BLEU are ``n`` continuations of a newline
(``genforge sample``'s default prompt), ``max_new_tokens`` long, at
``temperature``, seeded with ``seed``; the prompt itself is not scored.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from genforge.config import DataConfig
from genforge.data import TextData, Tokenizer
from genforge.data.transforms import shuffled_subset
from genforge.evaluation.progress import log
from genforge.evaluation.protocol import EvalError, Protocol, Report, Result, check_metric_names
from genforge.evaluation.text import heldout_nll, target_chars
from genforge.metrics.text import bleu, distinct_n, self_bleu
from genforge.sampling.text import TextPipeline, TextRequest, default_prompt

__all__ = ["TEXT_METRICS", "TextEvalOptions", "evaluate_text", "tokenizer_id"]

TEXT_METRICS = ("ppl", "distinct", "self_bleu", "bleu")


@dataclass(kw_only=True)
class TextEvalOptions:
    """Settings of a text evaluation (the text flags of ``genforge eval``); see the module docstring."""

    metrics: tuple[str, ...] | None = None
    n: int = 100
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int | None = None
    prompts: int = 100
    prompt_tokens: int = 64
    continuation_tokens: int = 64
    seed: int = 0
    reference_seed: int = 0
    batch_size: int = 64
    progress: bool = False

    def __post_init__(self) -> None:
        self.metrics = check_metric_names(self.metrics, TEXT_METRICS, "text")
        for name, hi in (("n", 10_000), ("max_new_tokens", 100_000), ("prompts", 100_000),
                         ("prompt_tokens", 100_000), ("continuation_tokens", 100_000), ("batch_size", 4096)):
            value = getattr(self, name)
            if not 1 <= value <= hi:
                raise EvalError(f"{name} must be in [1, {hi}], got {value}")
        if not 0 <= self.temperature < float("inf"):  # also refuses NaN
            raise EvalError(f"temperature must be a finite number >= 0, got {self.temperature}")


def tokenizer_id(tokenizer: Tokenizer) -> str:
    """``kind/vocab_size/sha256[:12]`` of the tokenizer's JSON: equal ids, identical tokenization."""
    digest = hashlib.sha256(tokenizer.to_json().encode()).hexdigest()[:12]
    return f"{tokenizer.kind}/{tokenizer.vocab_size}/{digest}"


def _sha256_ids(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()


def _greedy_continuations(pipeline: TextPipeline, prompts: np.ndarray, length: int, batch_size: int) -> list[str]:
    """Greedy ``length``-token continuations of token-id prompts ``[P_n, P]`` (batched), decoded."""
    out: list[str] = []
    for i in range(0, prompts.shape[0], batch_size):
        chunk = torch.from_numpy(prompts[i:i + batch_size].astype(np.int64))  # (b, P)
        new = pipeline.continue_ids(chunk, {"max_new_tokens": length, "temperature": 0.0})  # (b, length)
        out += [pipeline.tokenizer.decode(row.tolist()) for row in new]
    return out


@dataclass
class _TextEval:
    """State shared by the stages of a text evaluation."""

    pipeline: TextPipeline
    data: TextData
    opts: TextEvalOptions
    metrics: list[str]
    base: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    samples: list[str] | None = None

    def add(self, metric: str, value: float | None, proto: dict[str, Any], **details: Any) -> None:
        self.results.append(Result(metric, None if value is None else float(value), Protocol(metric=metric, **proto),
                                   None, details))

    def time(self, stage: str, t0: float) -> None:
        self.timings[stage] = round(time.perf_counter() - t0, 4)


def _ppl_stage(ev: _TextEval) -> None:
    """Loss, perplexity and bits per character over the whole validation split."""
    data, model = ev.data, ev.pipeline.model
    block = model.context_length
    log(ev.opts.progress, f"held-out loss on all {data.val.size} validation tokens …")
    t = time.perf_counter()
    chars = target_chars(data)
    out = heldout_nll(model, data.val, block_size=block, batch_size=ev.opts.batch_size, chars=chars)
    ev.time("heldout_nll", t)
    proto = dict(ev.base, n_reference=int(out["val/tokens"]), reference_split="val", reference_subsample="all",
                 reference_sha256=_sha256_ids(data.val),
                 params={"windows": "tiling: every token but the first is a target once"})
    details = {"targets": int(out["val/tokens"]), "block_size": block}
    ev.add("loss", out["val/loss"], dict(proto, params={**proto["params"], "unit": "nats per token"}), **details)
    ev.add("perplexity", out["val/perplexity"], dict(proto, params={**proto["params"], "unit": "per token"}),
           **details)
    if "val/bpc" in out:
        ev.add("bpc", out["val/bpc"], _bpc_protocol(ev), chars=chars, **details)


def _bpc_protocol(ev: _TextEval) -> dict[str, Any]:
    """The protocol of bits per character, which holds no tokenizer: the same characters scored under any
    tokenization give numbers that rank (a char model and a BPE model of one corpus split compete on it).

    The reference is the validation split's text itself (its characters and their sha256), the split sizes
    are in characters; what differs between tokenizers is only which characters the first token covers
    (context, never scored; a few characters of the split, recorded in ``details.chars``)."""
    data, tokenizer = ev.data, ev.pipeline.tokenizer
    text = tokenizer.decode(np.asarray(data.val).tolist()).encode("utf-8", errors="surrogatepass")
    return dict(ev.base, tokenizer="", n_reference=int(data.val_chars), reference_split="val",
                reference_subsample="all", reference_sha256=hashlib.sha256(text).hexdigest(),
                split_sizes={"train_chars": int(data.train_chars), "val_chars": int(data.val_chars)},
                params={"windows": "tiling: every token but the first is a target once",
                        "unit": "bits per character", "tokenizer_independent": True})


def _diversity_stage(ev: _TextEval) -> None:
    """distinct-n and self-BLEU of ``n`` samples continuing the default prompt."""
    opts, tokenizer = ev.opts, ev.pipeline.tokenizer
    prompt = default_prompt(tokenizer)
    log(opts.progress, f"generating {opts.n} samples of {opts.max_new_tokens} tokens …")
    t = time.perf_counter()
    texts = ev.pipeline.generate(TextRequest(prompt=prompt, n=opts.n, seed=opts.seed),
                                 {"max_new_tokens": opts.max_new_tokens, "temperature": opts.temperature,
                                  "top_k": opts.top_k})
    ev.time("generate", t)
    ev.samples = samples = [s[len(prompt):] for s in texts]
    sproto = dict(ev.base, n_generated=opts.n, seed=opts.seed,
                  params={"prompt": prompt, "max_new_tokens": opts.max_new_tokens,
                          "temperature": opts.temperature, "top_k": opts.top_k, "tokens": "whitespace words"})
    if "distinct" in ev.metrics:
        t = time.perf_counter()
        for n in (1, 2):
            try:
                d = distinct_n(samples, n)
                ev.add(f"distinct_{n}", d["distinct"], dict(sproto, params={**sproto["params"], "n": n}),
                       unique=d["unique"], total=d["total"],
                       denominator=f"{d['total']} word {n}-grams in {opts.n} samples")
            except ValueError as e:
                ev.add(f"distinct_{n}", None, dict(sproto, params={**sproto["params"], "n": n}), error=str(e))
                ev.warnings.append(f"distinct-{n}: {e}")
        ev.time("distinct", t)
    if "self_bleu" in ev.metrics:
        t = time.perf_counter()
        try:
            value = self_bleu(samples, max_order=4)
            ev.add("self_bleu", value, dict(sproto, params={**sproto["params"], "max_order": 4,
                                                            "smoothing": "NLTK method1"}),
                   references="each sample against the other n - 1")
        except ValueError as e:
            ev.warnings.append(f"self-BLEU: {e}")
        ev.time("self_bleu", t)


def _bleu_stage(ev: _TextEval) -> None:
    """Corpus BLEU of greedy continuations of held-out prompts against the true continuations."""
    opts, data, tokenizer = ev.opts, ev.data, ev.pipeline.tokenizer
    p, c = opts.prompt_tokens, opts.continuation_tokens
    windows = int(data.val.size) // (p + c)
    if windows < 1:
        msg = f"BLEU needs a validation split of at least {p + c} tokens, got {data.val.size}"
        if opts.metrics is not None:
            raise EvalError(msg + " (lower --prompt-tokens/--continuation-tokens)")
        ev.notes.append(f"bleu: skipped ({msg})")
        return
    k = min(opts.prompts, windows)
    if k < opts.prompts:
        ev.warnings.append(f"BLEU: the validation split holds only {windows} non-overlapping windows of {p + c} "
                           f"tokens; using {k} prompts instead of {opts.prompts}")
    starts = shuffled_subset(windows, k, opts.reference_seed).numpy() * (p + c)
    val = np.asarray(data.val)
    prompt_ids = np.stack([val[s:s + p] for s in starts])  # (k, P)
    refs = [tokenizer.decode(val[s + p:s + p + c].tolist()) for s in starts]
    log(opts.progress, f"greedy continuations of {k} held-out prompts …")
    t = time.perf_counter()
    hyps = _greedy_continuations(ev.pipeline, prompt_ids, c, opts.batch_size)
    score, signature = bleu(hyps, refs)
    ev.time("bleu", t)
    ev.add("bleu", score, dict(ev.base, n_generated=k, n_reference=k, reference_split="val",
                               reference_subsample="shuffled", subsample_seed=opts.reference_seed,
                               reference_sha256=_sha256_ids(np.concatenate([val[s:s + p + c] for s in starts])),
                               params={"prompt_tokens": p, "continuation_tokens": c, "decoding": "greedy",
                                       "windows": "non-overlapping", "sacrebleu": signature}),
           signature=signature, example={"prompt": tokenizer.decode(prompt_ids[0].tolist()),
                                         "reference": refs[0], "hypothesis": hyps[0]})


def evaluate_text(pipeline: TextPipeline, data: TextData, data_cfg: DataConfig, opts: TextEvalOptions) -> Report:
    """Evaluate a language model (through its sampling pipeline) on its corpus; see the module docstring.

    Args:
        pipeline: the run's text pipeline (model and tokenizer); the tokenizer must equal the data's.
        data: the corpus as :func:`genforge.data.load_text` gives it.
        data_cfg: its config (the name goes into the protocol).
        opts: settings.

    Raises:
        EvalError: a tokenizer that differs from the data's, a metric that cannot be computed.
    """
    tokenizer = pipeline.tokenizer
    if tokenizer != data.tokenizer:
        raise EvalError(f"the run's tokenizer ({tokenizer!r}) differs from the one built from {data_cfg.name} now "
                        f"({data.tokenizer!r}): the corpus or tokenizer settings changed since training")
    metrics = [m for m in TEXT_METRICS if opts.metrics is None or m in opts.metrics]
    sizes = {"train_tokens": int(data.train.size), "val_tokens": int(data.val.size),
             "train_chars": int(data.train_chars), "val_chars": int(data.val_chars)}
    ev = _TextEval(pipeline, data, opts, metrics,
                   base=dict(dataset=data_cfg.name, tokenizer=tokenizer_id(tokenizer), split_sizes=sizes))
    if "ppl" in metrics:
        _ppl_stage(ev)
    if {"distinct", "self_bleu"} & set(metrics):
        _diversity_stage(ev)
    if "bleu" in metrics:
        _bleu_stage(ev)
    generation = {"source": "model", "family": pipeline.model.family, "n": opts.n, "seed": opts.seed,
                  "temperature": opts.temperature, "max_new_tokens": opts.max_new_tokens}
    return Report(results=ev.results, warnings=ev.warnings, timings=ev.timings, generation=generation,
                  notes=ev.notes, texts=ev.samples)
