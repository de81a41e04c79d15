"""Dynamic batching for images: concurrent requests with the same options share one forward pass.

    >>> batcher = ImageBatcher(ImagePipeline.from_run("runs/mnist-diffusion"), max_batch=64, window_s=0.01)
    >>> job = batcher.submit(4, label=3, seed=1, options=opts)
    >>> images = job.result()            # uint8 [4, C, H, W], the images ImagePipeline.generate(4, ...) gives

A background thread takes the oldest waiting request, waits up to ``window_s``
for more with the same sample options (and the same kind of label: fixed or
drawn), and draws them together, up to ``max_batch`` images, with one seeded
generator per request (:class:`~genforge.models.rng.RowGenerators`): each
request's noise and labels are the ones its seed gives alone. A request
cancelled before its batch starts is dropped; one already drawing finishes its
batch (a sampler step is the unit of work, the batch is small). Nothing here
knows about HTTP.
"""

from __future__ import annotations

import time
from dataclasses import astuple, dataclass, field
from typing import Callable

import torch
from torch import Tensor

from genforge.config import FieldError
from genforge.models.base import SampleOptions, eval_mode
from genforge.models.conditions import Condition, concat
from genforge.models.rng import RowGenerators
from genforge.sampling.queue import Handle, Worker
from genforge.sampling.images import ImagePipeline, to_uint8


@dataclass(eq=False, kw_only=True)
class ImageJob(Handle):
    """One request: ``n`` images of ``condition`` (an int label, a :class:`Condition`, or None = labels drawn
    from the seed) with ``options``."""

    n: int
    condition: int | Condition | None
    seed: int
    options: SampleOptions
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None
    notify: Callable[[], None] | None = None  # called (from the batcher's thread) when the job is done
    images: Tensor | None = None
    error: str | None = None

    @property
    def key(self) -> tuple:
        """Requests with equal keys can share a batch."""
        c = self.condition
        kind = (c.kinds(), c.strength) if isinstance(c, Condition) else type(c).__name__
        return type(self.options), astuple(self.options), kind

    @property
    def label(self) -> int | None:
        """The request's label (an int), if any."""
        c = self.condition
        return c if isinstance(c, int) else (c.label if isinstance(c, Condition) else None)

    def result(self, timeout: float | None = None) -> Tensor:
        """The images uint8 [n, C, H, W]; RuntimeError with the reason when the job failed or was cancelled."""
        if not self.wait(timeout):
            raise TimeoutError("the images are not ready yet")
        if self.images is None:
            raise RuntimeError(self.error or "cancelled")
        return self.images


class ImageBatcher(Worker):
    """Batches concurrent image requests of one model (see the module docstring).

    Args:
        pipe: the model.
        max_batch: images drawn in one forward pass at most; a request of more runs alone in pieces.
        window_s: how long the oldest request waits for company.
        max_queue: requests allowed to wait; :meth:`submit` raises ``QueueFull`` beyond.
        on_batch: called with the number of images of every batch drawn (metrics).
    """

    def __init__(self, pipe: ImagePipeline, *, max_batch: int = 64, window_s: float = 0.01, max_queue: int = 256,
                 on_batch: Callable[[int], None] | None = None) -> None:
        if max_batch < 1 or window_s < 0:
            raise FieldError("max_batch", f"must be >= 1 and window_s >= 0; got {max_batch}, {window_s}")
        super().__init__(max_queue=max_queue, name=f"genforge-images-{pipe.name}")
        self.pipe, self.model = pipe, pipe.model
        self.max_batch, self.window_s = max_batch, window_s
        self.on_batch = on_batch
        self.busy = 0  # images being drawn now
        self.thread.start()

    def submit(self, n: int, *, label: int | None = None, seed: int, options: SampleOptions,
               condition: Condition | None = None,
               notify: Callable[[], None] | None = None) -> ImageJob:
        """Queue ``n`` images; ``options`` must already be the family's parsed sample options.
        ``notify`` is called from the batcher's thread when the job is done."""
        if n < 1:
            raise FieldError("n", f"must be >= 1, got {n}")
        if condition is not None and condition.kinds() == ("label",) and isinstance(condition.label, int):
            condition = condition.label  # a fixed label batches as it always has
        job = ImageJob(n=n, condition=condition if condition is not None else label, seed=seed, options=options,
                       notify=notify)
        return self.enqueue(job, "image requests")

    def _take(self) -> list[ImageJob] | None:
        """The next batch: the oldest job plus same-key jobs that arrive within the window (None: closed)."""
        with self.wake:
            while True:
                while self.waiting and self.waiting[0].cancelled:
                    self._done(self.waiting.popleft(), error="cancelled")
                if self.waiting or self.closed:
                    break
                self.wake.wait()
            if not self.waiting:
                return None
            first = self.waiting[0]
            deadline = first.submitted + self.window_s
            while True:
                batch, total = [], 0
                for job in self.waiting:
                    if job.key == first.key and not job.cancelled and (not batch or total + job.n <= self.max_batch):
                        batch.append(job)
                        total += job.n
                remaining = deadline - time.perf_counter()
                if total >= self.max_batch or remaining <= 0 or self.closed:
                    break
                self.wake.wait(remaining)
            for job in batch:
                self.waiting.remove(job)
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            now = time.perf_counter()
            for job in batch:
                job.started = now
            try:
                images = self._draw(batch)
            except Exception as e:  # noqa: BLE001 - report to every request of the batch, keep serving
                for job in batch:
                    self._done(job, error=f"{type(e).__name__}: {e}")
                continue
            start = 0
            for job in batch:
                job.images = images[start:start + job.n]
                start += job.n
                self._done(job)

    @torch.inference_mode()
    def _draw(self, batch: list[ImageJob]) -> Tensor:
        """All images of ``batch`` in request order, uint8 [sum n, C, H, W]."""
        first = batch[0]
        if len(batch) == 1 and first.n > self.max_batch:  # alone, in pieces (the pipeline's own batching)
            return self.pipe.generate(first.n, condition=first.condition, seed=first.seed, batch_size=self.max_batch,
                                      options=first.options)
        total = sum(j.n for j in batch)
        generators = RowGenerators([(torch.Generator().manual_seed(j.seed), j.n) for j in batch])
        if isinstance(first.condition, Condition):
            labels = concat([j.condition.expand(j.n) for j in batch], [j.n for j in batch])
        else:
            labels = None if first.condition is None else torch.cat([torch.full((j.n,), j.condition) for j in batch])
        self.busy = total
        try:
            with eval_mode(self.model):
                x = self.model.sample(total, condition=labels, generator=generators, **vars(first.options))
        finally:
            self.busy = 0
        if self.on_batch is not None:
            self.on_batch(total)
        return to_uint8(x)  # [total, C, H, W]

    @staticmethod
    def _done(job: ImageJob, *, error: str | None = None) -> None:
        job.error = error
        job._done.set()
        if job.notify is not None:
            try:
                job.notify()
            except Exception:  # noqa: BLE001 - the requester is gone
                pass
