"""ASGI pieces of the app: the body-size limit, the API-key / readiness gate, and cancellation when a
client leaves (engine events reach the loop through :mod:`genforge.serve.events`)."""

from __future__ import annotations

import asyncio
import logging

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


async def cancel_on_disconnect(request, jobs: list) -> None:
    """Cancel ``jobs`` when the client goes away (a request that is not streamed; run it as a task)."""
    while True:
        if await request.is_disconnected():
            for job in jobs:
                job.cancel()
            return
        await asyncio.sleep(0.05)
