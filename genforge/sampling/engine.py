"""Continuous batching for text: one decode loop that many requests join and leave, each with its own seed.

    >>> engine = TextEngine(TextPipeline.from_run("runs/shakespeare-char"), max_rows=32)
    >>> job = engine.submit(TextRequest(prompt="ROMEO:", n=2, seed=7), {"max_new_tokens": 50}, sink=print)
    >>> job.wait(); engine.close()

A background thread owns the model. At every step it admits waiting jobs (while
free rows last), encodes their prompts (:meth:`LanguageModel.prefill`), then
advances every running row by one token in one batched call
(:meth:`LanguageModel.decode`), each row at its own position. A job's ``n``
samples join and leave together; its tokens are drawn from its own generator
with its own temperature / top-k / top-p, exactly the draws
:meth:`TextPipeline.generate` makes for the same request, so a seeded request
gives the same text alone or beside others. Text goes through the same
incremental UTF-8 decoding and stop-string filter as the pipeline.

Events reach ``sink`` from the engine thread, in order: :class:`Tokens` after
every step (how many tokens the job generated), :class:`TextPiece` whenever
text becomes final, :class:`SampleDone` per sample and :class:`JobDone` last.
:meth:`Job.cancel` (a client that went away) takes the job out at the next
step. Nothing here knows about HTTP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import torch
from torch import Tensor

from genforge.config import FieldError
from genforge.models.base import eval_mode
from genforge.models.capabilities import LanguageModelOptions, next_tokens
from genforge.models.rng import RowGenerators
from genforge.sampling.queue import EngineClosed, Handle, QueueFull, Worker
from genforge.sampling.text import TextPipeline, TextRequest, _StopFilter, default_prompt

__all__ = ["EngineClosed", "Event", "Job", "JobDone", "QueueFull", "SampleDone", "TextEngine", "TextPiece", "Tokens"]


@dataclass(frozen=True)
class Tokens:
    """``count`` tokens were generated for the job in one step (``count`` = its number of samples)."""

    count: int


@dataclass(frozen=True)
class TextPiece:
    """Newly final text of sample ``index``."""

    index: int
    text: str


@dataclass(frozen=True)
class SampleDone:
    """Sample ``index`` ended: ``"stop"`` (a stop string), ``"length"`` (max_new_tokens) or ``"cancelled"``."""

    index: int
    reason: str


@dataclass(frozen=True)
class JobDone:
    """The job left the batch. ``error`` is a one-line message when it failed, else None."""

    prompt_tokens: int
    completion_tokens: int
    error: str | None = None


Event = Union[Tokens, TextPiece, SampleDone, JobDone]


@dataclass(eq=False, kw_only=True)
class Job(Handle):
    """One submitted request: its rows, its generator and the incremental text of each sample."""

    request: TextRequest
    options: LanguageModelOptions
    sink: Callable[[Event], None]
    prompt_ids: list[int]
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None  # when it joined the batch
    slots: Tensor | None = None  # int64 [n]
    ids: Tensor | None = None  # int64 [n, P + max_new_tokens]
    length: int = 0  # tokens in ids (prompt + generated)
    start: int = 0  # the window the model sees is ids[:, start:length]
    encoded: bool = False
    generated: int = 0

    def __post_init__(self) -> None:
        n = self.request.n
        self.generator = torch.Generator().manual_seed(self.request.seed)
        self.filters = [_StopFilter(self.request.stop) for _ in range(n)]
        self.decoders: list[Any] = []
        self.guard: Any = None  # Utf8Guard of the rows (byte-level tokenizers)


class TextEngine(Worker):
    """A decode loop over one language model shared by concurrent requests (see the module docstring).

    Args:
        pipe: the model and tokenizer.
        max_rows: samples decoded together at most (a request of n samples takes n rows).
        max_queue: jobs allowed to wait for rows; :meth:`submit` raises :class:`QueueFull` beyond.
        on_batch: called with the number of rows of every batched decode step (metrics).
    """

    def __init__(self, pipe: TextPipeline, *, max_rows: int = 32, max_queue: int = 256,
                 on_batch: Callable[[int], None] | None = None) -> None:
        if max_rows < 1:
            raise FieldError("max_rows", f"must be >= 1, got {max_rows}")
        super().__init__(max_queue=max_queue, name=f"genforge-text-{pipe.name}")
        self.pipe, self.model = pipe, pipe.model
        self.max_rows = max_rows
        self.on_batch = on_batch
        self.cache = self.model.new_slots(max_rows)
        self.free = list(range(max_rows))
        self.running: list[Job] = []
        self.steps = 0  # batched decode calls made
        self.thread.start()

    # ------------------------------------------------------------------ requests
    def prepare(self, request: TextRequest, options: LanguageModelOptions | dict[str, Any] | None) -> tuple[
            LanguageModelOptions, list[int]]:
        """Validate a request before it is queued: its options, prompt ids and size (ValueError naming the field)."""
        opts = self.model.parse_sample_options(options)
        prompt = default_prompt(self.pipe.tokenizer) if request.prompt is None else request.prompt
        if not prompt:
            raise ValueError("prompt must not be empty (a language model needs at least one token to continue)")
        ids = self.pipe.tokenizer.encode(prompt)
        if not ids:
            raise ValueError(f"prompt {prompt!r} encodes to no tokens")
        if request.n > self.max_rows:
            raise FieldError("n", f"must be <= {self.max_rows} (the server's batch rows), got {request.n}")
        return opts, ids

    def submit(self, request: TextRequest, options: LanguageModelOptions | dict[str, Any] | None = None, *,
               sink: Callable[[Event], None]) -> Job:
        """Queue a request; ``sink`` receives its events from the engine thread."""
        opts, ids = self.prepare(request, options)
        job = Job(request=request, options=opts, sink=sink, prompt_ids=ids)
        job.decoders = [self.pipe.tokenizer.stream_decoder() for _ in range(request.n)]
        job.guard = self.pipe.tokenizer.utf8_guard(request.n, ids)  # byte-level: tokens that keep valid UTF-8
        return self.enqueue(job)

    @property
    def rows_running(self) -> int:
        return self.max_rows - len(self.free)

    def active(self) -> list[Job]:
        return list(self.running)

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        with eval_mode(self.model), torch.inference_mode():
            while True:
                with self.wake:
                    while not self.closed and not self.waiting and not self.running:
                        self.wake.wait()
                    if self.closed and not self.running and not self.waiting:
                        return
                    admitted = self._admit()
                for job in admitted:
                    job.started = time.perf_counter()
                self._step()

    def _admit(self) -> list[Job]:
        """Move waiting jobs into free rows, oldest first (a job waits until all its rows are free)."""
        admitted = []
        while self.waiting and (self.waiting[0].cancelled or len(self.free) >= self.waiting[0].request.n):
            job = self.waiting.popleft()
            if job.cancelled:
                self._finish(job, cancelled=True)
                continue
            n = job.request.n
            job.slots = torch.tensor(self.free[:n], dtype=torch.long)
            del self.free[:n]
            P, new = len(job.prompt_ids), job.options.max_new_tokens
            job.ids = torch.empty(n, P + new, dtype=torch.long)
            job.ids[:, :P] = torch.tensor(job.prompt_ids, dtype=torch.long)
            job.length, job.start = P, max(0, P - self.model.context_length)
            self.running.append(job)
            admitted.append(job)
        return admitted

    def _step(self) -> None:
        """One token for every running job: new and slid windows are encoded, the rest decoded in one batch."""
        bs = self.model.context_length
        keep = bs - max(1, bs // 4)  # context kept after a slide, as in generate_stream
        for job in [j for j in self.running if j.cancelled or j.generated >= j.options.max_new_tokens]:
            self._finish(job, cancelled=job.cancelled)
        logits: dict[int, Tensor] = {}
        decoding = []
        for job in list(self.running):
            if job.length - job.start > bs:
                job.start, job.encoded = job.length - keep, False
            if not job.encoded:
                try:
                    logits[id(job)] = self.model.prefill(job.ids[:, job.start:job.length], self.cache, job.slots)
                except Exception as e:  # noqa: BLE001 - one bad job must not stop the others
                    self._finish(job, error=f"{type(e).__name__}: {e}")
                    continue
                job.encoded = True
            else:
                decoding.append(job)
        if decoding:
            slots = torch.cat([j.slots for j in decoding])
            tokens = torch.cat([j.ids[:, j.length - 1] for j in decoding])
            out = self.model.decode(tokens, self.cache, slots)  # (rows, V)
            self.steps += 1
            if self.on_batch is not None:
                self.on_batch(len(slots))
            row = 0
            for job in decoding:
                logits[id(job)] = out[row:row + job.request.n]
                row += job.request.n
        ready = [job for job in self.running if id(job) in logits]
        groups: dict[tuple, list[Job]] = {}
        for job in ready:  # jobs with the same decoding options choose their tokens in one call
            groups.setdefault(tuple(sorted(job.options.decoding().items())), []).append(job)
        for jobs in groups.values():
            rows = torch.cat([logits[id(j)] for j in jobs]) if len(jobs) > 1 else logits[id(jobs[0])]
            generators = RowGenerators([(j.generator, j.request.n) for j in jobs])
            # one tokenizer serves every job: all have a UTF-8 guard (byte-level) or none has (char)
            allowed = None if jobs[0].guard is None else torch.cat([j.guard.allowed() for j in jobs])  # (rows, V)
            nxt = next_tokens(rows, generators, allowed=allowed, **jobs[0].options.decoding())  # (rows,)
            start = 0
            for job in jobs:
                self._advance(job, nxt[start:start + job.request.n])
                start += job.request.n

    def _advance(self, job: Job, nxt: Tensor) -> None:
        """Append the job's next tokens int64 [n] and pass the text they complete to its sink."""
        job.ids[:, job.length] = nxt
        if job.guard is not None:
            job.guard.advance(nxt)
        job.length += 1
        job.generated += 1
        self._send(job, Tokens(job.request.n))
        for i, t in enumerate(nxt.tolist()):
            if not job.filters[i].done:
                self._emit(job, i, job.filters[i].push(job.decoders[i].push([t])))
        if all(f.done for f in job.filters) or job.generated >= job.options.max_new_tokens:
            self._finish(job)

    @staticmethod
    def _send(job: Job, event: Event) -> None:
        """Hand ``event`` to the job's sink; a sink that fails (its client is gone) cancels the job."""
        try:
            job.sink(event)
        except Exception:  # noqa: BLE001 - the loop serves other jobs
            job.cancel()

    @staticmethod
    def _emit(job: Job, i: int, piece: str) -> None:
        if piece:
            TextEngine._send(job, TextPiece(i, piece))

    def _finish(self, job: Job, *, cancelled: bool = False, error: str | None = None) -> None:
        """Take the job out of the batch, flush or drop its text, free its rows and send its last events."""
        if job in self.running:
            self.running.remove(job)
            with self.wake:
                self.free.extend(job.slots.tolist())
                self.free.sort()
        for i, f in enumerate(job.filters):
            if cancelled or error:
                reason = "cancelled" if cancelled else "error"
            else:
                stopped = f.done
                self._emit(job, i, f.push(job.decoders[i].flush(incomplete="drop")))
                self._emit(job, i, f.flush())
                reason = "stop" if stopped or f.done else "length"
            self._send(job, SampleDone(i, reason))
        self._send(job, JobDone(len(job.prompt_ids), job.generated * job.request.n, error))
        job._done.set()
