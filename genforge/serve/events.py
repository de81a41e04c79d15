"""Engine events (from the engine's thread) into one request's queue on the server's event loop.

:class:`EventBridge` hands each event to the loop; :class:`EventQueue` holds them for the response.
Each step's text is its own chunk while the response keeps up. Once ``MERGE_AFTER`` entries wait, a
sample's new text piece merges into its waiting one and token counts into one count, so a response
written slower than it is generated sends longer chunks, not later ones: a server whose decoder
outruns its own JSON encoding never falls behind. The bound on a stream counts the events not yet
read (merged or not): it is reached only while writes to the client wait.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable

from genforge.sampling.engine import TextPiece, Tokens

MERGE_AFTER = 64  # entries waiting before new text pieces and token counts merge into waiting ones
MERGE_WINDOW = 64  # queued entries a new event looks back over for one to merge with


class Overflow:
    """The event a queue gets, once, when ``limit`` events wait unread; later events are dropped."""


def merged(old: Any, new: Any) -> Any | None:
    """``old`` and ``new`` as one event, or None when they do not merge (different kinds or samples)."""
    if isinstance(old, TextPiece) and isinstance(new, TextPiece) and old.index == new.index:
        return TextPiece(old.index, old.text + new.text)
    if isinstance(old, Tokens) and isinstance(new, Tokens):
        return Tokens(old.count + new.count)
    return None


class EventQueue:
    """``(key, event)`` pairs of one request's jobs (job ``key``), read in order per job with :meth:`get`.

    Once ``MERGE_AFTER`` entries wait, a new text piece or token count merges into a waiting one of
    the same job (and sample) when no other event of that job (a sample's end, the job's end) stands
    after it: each job's events keep their order, and jobs are independent. ``limit`` bounds the events waiting unread, counting every event a merged one holds:
    beyond it ``on_overflow()`` runs (it cancels the request), :class:`Overflow` is queued and later
    events are dropped, so a client that stops reading holds bounded memory and compute."""

    def __init__(self, limit: int | None = None, on_overflow: Callable[[], None] | None = None) -> None:
        self.limit, self.on_overflow = limit, on_overflow
        self.entries: deque[list] = deque()  # [key, event, events it holds]
        self.unread = 0
        self.overflowed = False
        self._ready = asyncio.Event()

    def put(self, key: int, event: Any) -> None:
        """Queue ``event`` of job ``key`` (on the loop's thread)."""
        if self.overflowed:
            return
        if self.limit is not None and self.unread >= self.limit:
            self.overflowed = True
            self.entries.append([key, Overflow(), 0])
            self._ready.set()
            if self.on_overflow is not None:
                self.on_overflow()
            return
        self.unread += 1
        self._ready.set()
        for entry in self._tail(key) if len(self.entries) >= MERGE_AFTER else ():
            if (both := merged(entry[1], event)) is not None:
                entry[1], entry[2] = both, entry[2] + 1
                return
        self.entries.append([key, event, 1])

    def _tail(self, key: int):
        """The last queued entries of job ``key``, newest first, up to the newest of its entries that is
        neither a text piece nor a token count (other jobs' entries are passed: only a job's own order
        matters)."""
        for n, entry in enumerate(reversed(self.entries)):
            if n >= MERGE_WINDOW:
                return
            if entry[0] == key:
                if not isinstance(entry[1], (TextPiece, Tokens)):
                    return
                yield entry

    async def get(self) -> tuple[int, Any]:
        """The oldest ``(key, event)``, waiting for one."""
        while not self.entries:
            self._ready.clear()
            await self._ready.wait()
        key, event, held = self.entries.popleft()
        self.unread -= held
        return key, event

    def qsize(self) -> int:
        return len(self.entries)


class EventBridge:
    """The sink of one engine job: each event goes, from the engine's thread, into ``queue`` on ``loop``
    tagged with the job's ``key``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: EventQueue, key: int = 0) -> None:
        self.loop, self.queue, self.key = loop, queue, key

    def __call__(self, event: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put, self.key, event)
