"""What the text engine and the image batcher share: a bounded queue of jobs served by one background thread.

A job is a :class:`Handle` (cancel, wait); a :class:`Worker` takes jobs with
:meth:`Worker.enqueue` (``QueueFull`` beyond ``max_queue`` waiting,
``EngineClosed`` after :meth:`Worker.close`) and runs ``_loop`` in its thread.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any


class QueueFull(RuntimeError):
    """More jobs are waiting than the worker accepts."""


class EngineClosed(RuntimeError):
    """The worker was closed and takes no more jobs."""


@dataclass(eq=False, kw_only=True)
class Handle:
    """A queued job: cancel it, ask whether it was cancelled, wait until it is done."""

    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        """Stop the job at the worker's next step (a waiting job is dropped)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job is done; False on timeout."""
        return self._done.wait(timeout)


class Worker:
    """A bounded queue of :class:`Handle` jobs and the thread that serves them (``_loop``, in subclasses)."""

    def __init__(self, *, max_queue: int, name: str) -> None:
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.max_queue = max_queue
        self.waiting: deque[Any] = deque()
        self.wake = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _loop(self) -> None:
        raise NotImplementedError

    def enqueue(self, job: Handle, what: str = "requests") -> Handle:
        """Queue ``job`` for the thread, or raise ``QueueFull`` / ``EngineClosed``."""
        with self.wake:
            if self.closed:
                raise EngineClosed("the server is shutting down")
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{len(self.waiting)} {what} are already waiting (limit {self.max_queue})")
            self.waiting.append(job)
            self.wake.notify()
        return job

    @property
    def jobs_waiting(self) -> int:
        return len(self.waiting)

    def active(self) -> list[Handle]:
        """Jobs being worked on now (cancelled by :meth:`close`)."""
        return []

    def close(self, timeout: float | None = 10.0) -> None:
        """Refuse new jobs, cancel waiting and active ones, and stop the thread."""
        with self.wake:
            self.closed = True
            for job in [*self.waiting, *self.active()]:
                job.cancel()
            self.wake.notify()
        self.thread.join(timeout)
