"""The one text decoder: rows of sequences in slots of a language model's cache, advanced one token per step.

    >>> loop = DecodeLoop(model, rows=8)
    >>> job = loop.add(prompt_ids, 50, generator=torch.Generator().manual_seed(0), temperature=0.8)
    >>> while not job.done:
    ...     for j, tokens in loop.step(): ...

Every text path decodes here: ``GPT.sample`` / ``GPT.generate`` and
``TextPipeline.generate`` / ``continue_ids`` (through :func:`stream`: one job of
n rows), the serving ``TextEngine`` (jobs joining and leaving between steps) and
the ONNX export check (the same loop over an onnxruntime-backed model). The loop
knows nothing of a family: it asks the model (a
:class:`~genforge.models.capabilities.LanguageModel`) for ``new_slots``,
``prefill``, ``decode`` and ``window_start``, so a second family only implements
those four.

One :meth:`DecodeLoop.step`:

1. each job whose window is new or moved (``window_start``) is encoded with one
   ``prefill`` call of its own (a job's rows share their length);
2. every other row gets one new position in a single batched ``decode`` call;
3. jobs with the same decoding options choose their tokens in one
   :func:`~genforge.models.capabilities.next_tokens` call, each job's rows drawing
   from its own generator (:class:`~genforge.models.rng.RowGenerators`) under its
   own optional token mask (e.g. the UTF-8 guard of byte-level tokenizers), so a
   seeded job gets the same tokens alone or beside others.

A job alone in the loop (one row, no token mask, no top-k/top-p) on a model that
:meth:`~genforge.models.capabilities.LanguageModel.runs_ahead` decodes up to
``RUN_AHEAD`` tokens in one ``decode_run`` call, as long as its window stays put,
drawing the same uniforms in the same order; the following steps hand those
tokens out one per step (each step still returns one token per job), so a
request that joins meanwhile waits for nothing and the tokens are the same.

``use_cache=False`` re-encodes every window with ``prefill`` at every step and
never calls ``decode``: the reference the key/value cache must match (tested).

Shape legend: n rows of one job, P prompt length, N ``max_new_tokens``, R rows
decoded in one step, V vocabulary size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from genforge.config import FieldError
from genforge.models.capabilities import LanguageModel, LanguageModelOptions, next_tokens
from genforge.models import rng
from genforge.models.rng import Generator, RowGenerators

RUN_AHEAD = 16  # tokens a lone job decodes per ``decode_run`` call (about a millisecond of a small model)
TokenMask = Callable[[], "Tensor | None"]  # → bool [n, V] of the tokens each row may take next, or None (all)


@dataclass(eq=False, kw_only=True)
class DecodeJob:
    """``n`` rows decoded together: one prompt length, one generator, one set of decoding options.

    Attributes:
        ids: int64 [n, P + N] on the CPU: the prompt, then the tokens generated so far (up to ``length``).
        prompt_length: P.
        length: tokens in ``ids``.
        start: the model sees the window ``ids[:, start:length]``.
        max_new_tokens: N; the loop lets the job go (``done``) once it has generated them.
        generator: the only randomness its rows use.
        decoding: keyword arguments of ``next_tokens`` (temperature, top_k, top_p).
        token_mask: called before every draw (None = every token allowed).
        slots: int64 [n]: the cache slots of its rows while it is in the loop.
        encoded: the cache holds its window up to the newest token.
        generated: tokens generated per row.
        error: the exception its ``prefill`` raised (the job then left the loop).
        ahead: int64 [k] tokens already decoded into the cache by ``decode_run``, handed out one per step.
    """

    ids: Tensor
    prompt_length: int
    length: int
    start: int
    max_new_tokens: int
    generator: Generator = None
    decoding: dict[str, Any]
    token_mask: TokenMask | None = None
    slots: Tensor | None = None
    encoded: bool = False
    generated: int = 0
    error: Exception | None = None
    ahead: list[int] | None = None

    def __post_init__(self) -> None:
        self.group = tuple(sorted(self.decoding.items()))  # jobs with equal options choose tokens together

    @property
    def n(self) -> int:
        return self.ids.shape[0]

    @property
    def done(self) -> bool:
        return self.error is not None or self.generated >= self.max_new_tokens

    @property
    def new_ids(self) -> Tensor:
        """The tokens generated so far: int64 [n, generated]."""
        return self.ids[:, self.prompt_length:self.length]


def check_prompt(model: LanguageModel, prompt: Tensor) -> Tensor:
    """Token ids int64 [n, P] with P >= 1, each in [0, V), on the CPU; else FieldError / ValueError."""
    if prompt.ndim != 2 or prompt.shape[0] < 1 or prompt.shape[1] < 1:
        raise FieldError("prompt", f"must be token ids [B, P] with B, P >= 1, got {list(prompt.shape)}")
    if int(prompt.max()) >= model.vocab_size or int(prompt.min()) < 0:
        raise ValueError(f"prompt token ids must be in [0, {model.vocab_size - 1}]")
    return prompt.to("cpu", torch.long)


class DecodeLoop:
    """Jobs of rows in the ``rows`` slots of one cache of ``model``, advanced together (module docstring).

    Args:
        model: any :class:`~genforge.models.capabilities.LanguageModel`.
        rows: slots of the cache: rows decoded together at most.
        use_cache: False re-encodes every window at every step (the no-cache reference).
        on_decode: called with R after every batched ``decode`` call (metrics).
    """

    def __init__(self, model: LanguageModel, rows: int, *, use_cache: bool = True,
                 on_decode: Callable[[int], None] | None = None) -> None:
        if rows < 1:
            raise FieldError("rows", f"must be >= 1, got {rows}")
        self.model, self.rows, self.use_cache, self.on_decode = model, rows, use_cache, on_decode
        self.cache = model.new_slots(rows)
        self.free = list(range(rows))  # slots no job holds, ascending
        self.jobs: list[DecodeJob] = []  # in the order they joined
        self.steps = 0  # batched decode calls made
        self.runs = use_cache and model.runs_ahead(self.cache)  # whether a lone job may run ahead

    def fits(self, n: int) -> bool:
        """Whether a job of ``n`` rows can join now."""
        return n <= len(self.free)

    def add(self, prompt: Tensor, max_new_tokens: int, *, generator: Generator = None,
            token_mask: TokenMask | None = None, **decoding: Any) -> DecodeJob:
        """A job continuing each row of ``prompt`` int64 [n, P] by ``max_new_tokens`` tokens, from the next step.

        ``decoding``: temperature, top_k, top_p (checked like :class:`LanguageModelOptions`). A job of 0 new
        tokens is done at once and takes no slots.
        """
        prompt = check_prompt(self.model, prompt)
        LanguageModelOptions(max_new_tokens=max_new_tokens, **decoding)  # FieldError naming a bad option
        n, P = prompt.shape
        if not self.fits(n):
            raise ValueError(f"a job of {n} rows does not fit the {len(self.free)} free rows of {self.rows}")
        ids = torch.empty(n, P + max_new_tokens, dtype=torch.long)  # (n, P + N)
        ids[:, :P] = prompt
        job = DecodeJob(ids=ids, prompt_length=P, length=P, start=self.model.window_start(P, None),
                        max_new_tokens=max_new_tokens, generator=generator, decoding=decoding, token_mask=token_mask)
        if not job.done:
            job.slots = torch.tensor(self.free[:n], dtype=torch.long)
            del self.free[:n]
            self.jobs.append(job)
        return job

    def remove(self, job: DecodeJob) -> None:
        """Take ``job`` out of the loop (finished, stopped or cancelled) and free its slots."""
        if job in self.jobs:
            self.jobs.remove(job)
            self.free = sorted(self.free + job.slots.tolist())

    def step(self) -> list[tuple[DecodeJob, Tensor]]:
        """One token for every row of every job: [(job, its new tokens int64 [n]), ...].

        A job whose ``prefill`` fails gets ``error`` set and leaves the loop (the others go on); a job that
        reached ``max_new_tokens`` leaves after this step (``done``).
        """
        if not torch.is_inference_mode_enabled():
            with _inference_mode():
                return self.step()
        logits: dict[DecodeJob, Tensor] = {}  # job → [n, V]
        to_decode, ahead = [], []
        for job in list(self.jobs):
            if job.ahead:  # decoded ahead: its next token is known
                ahead.append(job)
                continue
            start = self.model.window_start(job.length, job.start)
            if start != job.start:  # the window moved: encode it again
                job.start, job.encoded = start, False
            if job.encoded and self.use_cache:
                to_decode.append(job)
                continue
            try:
                logits[job] = self.model.prefill(job.ids[:, job.start:job.length], self.cache, job.slots)
            except Exception as e:  # noqa: BLE001 - one bad job must not stop the others
                job.error = e
                self.remove(job)
                continue
            job.encoded = True
        if len(to_decode) == 1 and len(self.jobs) == 1 and self._run_ahead(to_decode[0]):
            ahead.append(to_decode.pop())
        if to_decode:
            logits.update(self._decode(to_decode))
        out = [self._hand_out(job) for job in ahead]
        return out + self._choose([job for job in self.jobs if job in logits], logits)

    def _run_ahead(self, job: DecodeJob) -> bool:
        """Decode up to ``RUN_AHEAD`` tokens of a lone one-row job in one ``decode_run`` call into ``job.ahead``,
        while its window stays put; False (nothing drawn) where the model or the job's options do not allow."""
        d = job.decoding
        top_p = d.get("top_p")
        if (not self.runs or job.n != 1 or job.token_mask is not None or d.get("top_k") is not None
                or (top_p is not None and top_p < 1.0)):
            return False
        n = 1
        while (n < min(RUN_AHEAD, job.max_new_tokens - job.generated)
               and self.model.window_start(job.length + n, job.start) == job.start):
            n += 1
        if n < 2:
            return False
        temperature = d.get("temperature", 1.0)
        u = torch.empty(0) if temperature == 0 else rng.rand((1, n), job.generator)[0]  # (n,)
        tokens = self.model.decode_run(job.ids[:, job.length - 1], self.cache, job.slots, n, temperature, u)
        self.steps += n
        if self.on_decode is not None:
            for _ in range(n):
                self.on_decode(1)
        job.ahead = tokens.tolist()
        return True

    def _hand_out(self, job: DecodeJob) -> tuple[DecodeJob, Tensor]:
        """The next of ``job.ahead``'s tokens as this step's, int64 [1], appended."""
        tokens = torch.tensor(job.ahead[:1])  # (1,)
        del job.ahead[0]
        self._append(job, tokens)
        return job, tokens

    def _decode(self, jobs: list[DecodeJob]) -> dict[DecodeJob, Tensor]:
        """One new position for every row of ``jobs`` in one ``decode`` call → each job's logits [n, V]."""
        if len(jobs) == 1:
            slots, tokens = jobs[0].slots, jobs[0].ids[:, jobs[0].length - 1]  # (n,), (n,)
        else:
            slots = torch.cat([j.slots for j in jobs])  # (R,)
            tokens = torch.cat([j.ids[:, j.length - 1] for j in jobs])  # (R,)
        out = self.model.decode(tokens, self.cache, slots)  # (R, V)
        self.steps += 1
        if self.on_decode is not None:
            self.on_decode(len(slots))
        if len(jobs) == 1:
            return {jobs[0]: out}
        split, row = {}, 0
        for job in jobs:
            split[job] = out[row:row + job.n]
            row += job.n
        return split

    def _choose(self, jobs: list[DecodeJob], logits: dict[DecodeJob, Tensor]) -> list[tuple[DecodeJob, Tensor]]:
        """Draw the next tokens of ``jobs``, one ``next_tokens`` call per group of equal options; append them."""
        if len(jobs) == 1:  # one job alone (a chat user's request): no grouping
            job = jobs[0]
            allowed = None if job.token_mask is None else job.token_mask()  # (n, V) or None
            tokens = next_tokens(logits[job], job.generator, allowed=allowed, **job.decoding)  # (n,)
            self._append(job, tokens)
            return [(job, tokens)]
        groups: dict[tuple, list[DecodeJob]] = {}
        for job in jobs:
            groups.setdefault(job.group, []).append(job)
        out = []
        for group in groups.values():
            rows = torch.cat([logits[j] for j in group]) if len(group) > 1 else logits[group[0]]  # (R, V)
            nxt = next_tokens(rows, _generators(group), allowed=_allowed(group, rows.shape[-1]),
                              **group[0].decoding)  # (R,)
            row = 0
            for job in group:
                tokens = nxt if len(group) == 1 else nxt[row:row + job.n]  # (n,)
                row += job.n
                self._append(job, tokens)
                out.append((job, tokens))
        return out

    def _append(self, job: DecodeJob, tokens: Tensor) -> None:
        """Give ``job`` its next tokens int64 [n]; a job that has all it asked for leaves the loop."""
        job.ids[:, job.length] = tokens
        job.length += 1
        job.generated += 1
        if job.done:
            self.remove(job)


def _inference_mode():
    """``torch.inference_mode()``'s guard without its Python wrapper (entered at every token: µs count)."""
    guard = getattr(torch._C, "_InferenceMode", None)
    return torch.inference_mode() if guard is None else guard(True)


def _generators(jobs: list[DecodeJob]) -> Generator:
    """The generator of a group's rows: a lone job's own, else each job's over its rows."""
    if len(jobs) == 1:
        return jobs[0].generator
    parts = []
    for job in jobs:
        g = job.generator
        parts += g.parts if isinstance(g, RowGenerators) else [(g, job.n)]
    return RowGenerators(parts)


def _allowed(jobs: list[DecodeJob], vocab: int) -> Tensor | None:
    """bool [R, V] of the tokens each row of ``jobs`` may take, or None when no job masks any."""
    masks = [None if j.token_mask is None else j.token_mask() for j in jobs]
    if len(jobs) == 1 or all(m is None for m in masks):
        return masks[0] if len(jobs) == 1 else None
    return torch.cat([torch.ones(j.n, vocab, dtype=torch.bool) if m is None else m.cpu() for j, m in zip(jobs, masks)])


def stream(model: LanguageModel, prompt: Tensor, max_new_tokens: int, *, generator: Generator = None,
           use_cache: bool = True, token_mask: TokenMask | None = None, **decoding: Any) -> Iterator[Tensor]:
    """Yield the next token of every row, int64 [n], for ``max_new_tokens`` steps: one job alone in a loop.

    Args:
        model: the language model.
        prompt: int64 [n, P] token ids, P >= 1 (the rows share the prompt length).
        generator: the only randomness used (drawn on the CPU), so output is seeded.
        use_cache: False re-encodes every window from scratch (a reference for tests).
        token_mask: called before every draw: bool [n, V] of the tokens each row may take
            (the caller updates it from the tokens yielded), or None for all.
        decoding: temperature (0 = greedy), top_k, top_p.
    """
    prompt = check_prompt(model, prompt)
    loop = DecodeLoop(model, prompt.shape[0], use_cache=use_cache)
    job = loop.add(prompt, max_new_tokens, generator=generator, token_mask=token_mask, **decoding)
    while not job.done:
        for _, tokens in loop.step():
            yield tokens
    if job.error is not None:
        raise job.error
