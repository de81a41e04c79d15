"""ASGI pieces of the app: the body-size limit, the API-key / readiness gate, the bridge that carries
engine events from the engine's thread onto the event loop, and cancellation when a client leaves."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from genforge.serve import errors

log = logging.getLogger("uvicorn.error")


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes is answered 413 before the app reads it all."""

    def __init__(self, app, limit: int, on_error) -> None:
        self.app, self.limit, self.on_error = app, limit, on_error

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(scope, receive, send)
        seen = 0
        chunks = []
        while True:  # read the body here so an undeclared (chunked) one is bounded too
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            seen += len(message.get("body", b""))
            if seen > self.limit:
                return await self._refuse(scope, receive, send)
            chunks.append(message)
            if not message.get("more_body"):
                break
        replay = iter(chunks)

        async def replayed():
            try:
                return next(replay)
            except StopIteration:
                return await receive()

        return await self.app(scope, replayed, send)

    async def _refuse(self, scope, receive, send):
        self.on_error(None, 413)
        response = errors.error_response(413, f"the request body is larger than the limit of {self.limit} bytes",
                                         "body", "body_too_large")
        await response(scope, receive, send)


class Gate:
    """ASGI middleware: ``check(scope)`` returns a response to answer instead of the app, or None.

    Pure ASGI (not ``BaseHTTPMiddleware``), so the app still sees the client's disconnect.
    """

    def __init__(self, app, check) -> None:
        self.app, self.check = app, check

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and (response := self.check(scope)) is not None:
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


class WriteTimeout:
    """ASGI middleware: a write to the client that waits more than ``seconds`` (a client that stopped
    reading, its socket buffers full) ends the response; the server then closes the connection, and
    a streamed generation is cancelled with it."""

    def __init__(self, app, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def timed(message):
            try:
                await asyncio.wait_for(send(message), self.seconds)
            except asyncio.TimeoutError:
                raise SlowClient(f"a write to the client took over {self.seconds:g} s") from None

        try:
            await self.app(scope, receive, timed)
        except SlowClient as e:
            log.warning("genforge serve: %s %s: %s; connection closed", scope.get("method"), scope.get("path"), e)


class SlowClient(Exception):
    """The client did not take a write within the write timeout."""


class Overflow:
    """The event a request's queue gets, once, when its client fell ``limit`` events behind."""


class EventBridge:
    """Engine events (from its thread) into an asyncio queue on the server's loop, as ``(key, event)``:
    the jobs of one request share a queue, each tagged with its own key. At most ``limit`` events wait
    in the queue: beyond, ``on_overflow()`` runs (it cancels the request), :class:`Overflow` is queued
    and later events are dropped, so a client that reads slower than generation holds bounded memory."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, key: int = 0, *,
                 limit: int | None = None, on_overflow=None) -> None:
        self.loop, self.queue, self.key = loop, queue, key
        self.limit, self.on_overflow = limit, on_overflow

    def __call__(self, event: Any) -> None:
        self.loop.call_soon_threadsafe(self._put, event)

    def _put(self, event: Any) -> None:
        if self.limit is None:
            return self.queue.put_nowait((self.key, event))
        if getattr(self.queue, "overflowed", False):
            return None
        if self.queue.qsize() >= self.limit:
            self.queue.overflowed = True
            self.queue.put_nowait((self.key, Overflow()))
            if self.on_overflow is not None:
                self.on_overflow()
            return None
        return self.queue.put_nowait((self.key, event))


async def cancel_on_disconnect(request, jobs: list) -> None:
    """Cancel ``jobs`` when the client goes away (a request that is not streamed; run it as a task)."""
    while True:
        if await request.is_disconnected():
            for job in jobs:
                job.cancel()
            return
        await asyncio.sleep(0.05)
