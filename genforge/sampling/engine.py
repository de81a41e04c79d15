"""Continuous batching for text: one decode loop that many requests join and leave, each with its own seed.

    >>> engine = TextEngine(TextPipeline.from_run("runs/shakespeare-char"), max_rows=32)
    >>> job = engine.submit(TextRequest(prompt="ROMEO:", n=2, seed=7), {"max_new_tokens": 50}, sink=print)
    >>> job.wait(); engine.close()

A background thread owns the model and one
:class:`~genforge.models.decoding.DecodeLoop` over it, the decoder every text
path uses. At every step it admits waiting jobs into the loop (while free rows
last) and advances the loop by one token: new and slid windows are encoded
(:meth:`LanguageModel.prefill`), every other row gets one position in one
batched call (:meth:`LanguageModel.decode`), each row at its own position. A
job's ``n`` samples join and leave together; its tokens are drawn from its own
generator with its own temperature / top-k / top-p, exactly the draws
:meth:`TextPipeline.generate` makes for the same request (a job of n rows alone
in the same loop), so a seeded request gives the same text alone or beside
others. Text goes through the same incremental UTF-8 decoding and stop-string
filter as the pipeline.

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
from genforge.models.capabilities import LanguageModelOptions
from genforge.models.decoding import DecodeJob, DecodeLoop
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
    rows: DecodeJob | None = None  # its rows in the decode loop, once admitted

    @property
    def generated(self) -> int:
        """Tokens generated per sample so far."""
        return 0 if self.rows is None else self.rows.generated

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
        self.loop = DecodeLoop(self.model, max_rows, on_decode=self._decoded)
        self.running: list[Job] = []
        self.thread.start()

    @property
    def steps(self) -> int:
        """Batched decode calls made."""
        return self.loop.steps

    def _decoded(self, rows: int) -> None:
        if self.on_batch is not None:
            self.on_batch(rows)

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
        return self.max_rows - len(self.loop.free)

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
        """Move waiting jobs into free rows of the loop, oldest first (a job waits until all its rows are free)."""
        admitted = []
        while self.waiting and (self.waiting[0].cancelled or self.loop.fits(self.waiting[0].request.n)):
            job = self.waiting.popleft()
            if job.cancelled:
                self._finish(job, cancelled=True)
                continue
            prompt = torch.tensor(job.prompt_ids, dtype=torch.long).expand(job.request.n, -1)  # (n, P)
            try:
                job.rows = self.loop.add(prompt, job.options.max_new_tokens, generator=job.generator,
                                         token_mask=None if job.guard is None else job.guard.allowed,
                                         **job.options.decoding())
            except Exception as e:  # noqa: BLE001 - one bad job must not stop the others
                self._finish(job, error=f"{type(e).__name__}: {e}")
                continue
            self.running.append(job)
            admitted.append(job)
        return admitted

    def _step(self) -> None:
        """One step of the loop: one token for every running job (see :meth:`DecodeLoop.step`)."""
        for job in [j for j in self.running if j.cancelled or j.rows.done]:
            self._finish(job, cancelled=job.cancelled)
        owner = {job.rows: job for job in self.running}
        for rows, tokens in self.loop.step():
            self._advance(owner[rows], tokens)
        for job in [j for j in self.running if j.rows.error is not None]:
            self._finish(job, error=f"{type(job.rows.error).__name__}: {job.rows.error}")

    def _advance(self, job: Job, nxt: Tensor) -> None:
        """Hand the job's next tokens int64 [n] (the loop appended them) and the text they complete to its sink."""
        if job.guard is not None:
            job.guard.advance(nxt)
        self._send(job, Tokens(job.request.n))
        for i, t in enumerate(nxt.tolist()):
            if not job.filters[i].done:
                self._emit(job, i, job.filters[i].push(job.decoders[i].push([t])))
        if all(f.done for f in job.filters) or job.rows.done:
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
                self.loop.remove(job.rows)
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
