"""``/v1/completions`` (whole, or streamed as server-sent events) and ``/v1/chat/completions`` (a clear 400).

A completion is :func:`decode_request` → :func:`predict` → :func:`encode_response` / :func:`encode_stream`:

- ``decode_request`` validates everything once, before anything is queued: the HTTP fields against the
  server's limits, then each prompt's request and options with ``model.pipe.parse`` and its encoding with
  ``model.engine.prepare``. Errors are 400s whose ``param`` is the field the error carries.
- ``predict`` queues one engine job per prompt (all or none) and returns their merged events.
- ``encode_response`` / ``encode_stream`` turn the events into OpenAI's completion or its chunks.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from genforge.sampling.engine import Event, Job, JobDone, SampleDone, TextPiece
from genforge.sampling.text import TextRequest
from genforge.serve import errors
from genforge.serve.errors import APIError
from genforge.serve.metrics import Tracker
from genforge.serve.events import EventBridge, EventQueue, Overflow
from genforge.serve.middleware import cancel_on_disconnect
from genforge.serve.registry import ServedModel
from genforge.serve.schemas import ChatRequest, CompletionRequest
from genforge.serve.settings import ServeSettings
from genforge.serve.state import ServerState, server_state

router = APIRouter()


@dataclass(eq=False)
class Completion:
    """A validated completion request: per prompt, its :class:`TextRequest` and the model's options."""

    body: CompletionRequest
    model: ServedModel
    seed: int
    prompts: list[tuple[TextRequest, Any]]
    arrived: float
    meta: dict[str, Any]  # id, object, created, model: the same in every chunk


@dataclass(eq=False)
class Generation:
    """The queued jobs of one completion (job k = prompt k) and the queue of their ``(k, event)``."""

    jobs: list[Job]
    queue: EventQueue
    tracker: Tracker
    deadline: float | None  # perf_counter time past which the request is cancelled (504)

    async def events(self) -> AsyncIterator[tuple[int, Event]]:
        """Every job's events, in order per job, until each is done; ``TimeoutError`` past the deadline."""
        left = len(self.jobs)
        while left:
            timeout = None if self.deadline is None else max(0.0, self.deadline - time.perf_counter())
            k, event = await asyncio.wait_for(self.queue.get(), timeout)
            if isinstance(event, Overflow):
                raise StreamOverflow()
            self.tracker.saw(event)
            left -= isinstance(event, JobDone)
            yield k, event

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancel()


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, state: ServerState = Depends(server_state)):
    call = decode_request(state, body, request)
    generation = predict(state, call)
    if body.stream:
        return Stream(generation, encode_stream(call, generation, state.settings), media_type="text/event-stream",
                      headers={"Cache-Control": "no-cache", "X-Genforge-Seed": str(call.seed)})
    return await encode_response(call, generation, request, state.settings)


class StreamOverflow(Exception):
    """The client fell ``--stream-buffer`` events behind its stream."""


class Stream(StreamingResponse):
    """A streamed completion whose generation is cancelled however the response ends (a write that timed
    out or failed included), not only when its generator is closed."""

    def __init__(self, generation: Generation, content, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.generation = generation

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.generation.cancel()


@router.post("/v1/chat/completions")
async def chat(body: ChatRequest, request: Request, state: ServerState = Depends(server_state)):
    model = state.lookup(request, body.model, "text")
    raise APIError(400, f"model {model.name!r} is a plain {model.info['family']} language model without a chat "
                        f"format; send its text to /v1/completions as a prompt", param="model", code="no_chat_format")


# ---------------------------------------------------------------------- decode_request
def decode_request(state: ServerState, body: CompletionRequest, request: Request) -> Completion:
    """The request, validated once: fields and limits, then every prompt (APIError naming the field)."""
    arrived = time.perf_counter()
    model = state.lookup(request, body.model, "text")
    stops = body.stops()
    check_fields(body, stops, state.settings)
    seed = body.seed if body.seed is not None else secrets.randbits(31)
    prompts = [parse_prompt(model, body, prompt, stops, seed, state.settings) for prompt in body.prompts()]
    meta = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
            "model": model.name}
    return Completion(body=body, model=model, seed=seed, prompts=prompts, arrived=arrived, meta=meta)


def check_fields(body: CompletionRequest, stops: list[str], settings: ServeSettings) -> None:
    """The HTTP fields: supported by genforge and within this server's limits."""
    if (field := body.unsupported()) is not None:
        raise APIError(400, f"{field} is not supported by genforge's completions", param=field,
                       code="unsupported_field")
    if body.max_tokens > settings.max_tokens:
        raise APIError(400, f"max_tokens must be <= {settings.max_tokens} on this server, got {body.max_tokens}",
                       param="max_tokens", code="limit")
    prompts = body.prompts()
    if not prompts:
        raise APIError(400, "prompt must not be an empty list", param="prompt")
    if body.n * len(prompts) > settings.max_n:
        raise APIError(400, f"n × prompts must be <= {settings.max_n} on this server, got {body.n} × "
                            f"{len(prompts)}", param="n", code="limit")
    if len(stops) > 4 or any(not s or len(s) > 256 for s in stops):
        raise APIError(400, "stop must be at most 4 non-empty strings of at most 256 characters", param="stop")
    for prompt in prompts:
        if prompt is not None and len(prompt) > settings.max_prompt_chars:
            raise APIError(400, f"prompt is {len(prompt)} characters; the limit is {settings.max_prompt_chars}",
                           param="prompt", code="limit")


def parse_prompt(model: ServedModel, body: CompletionRequest, prompt: str | None, stops: list[str], seed: int,
                 settings: ServeSettings) -> tuple[TextRequest, Any]:
    """One prompt's request and options (``pipe.parse``), and its encoding (``engine.prepare``: the prompt
    encodes to tokens, ``n`` fits the batch rows)."""
    raw = {"prompt": prompt, "n": body.n, "seed": seed, "stop": stops, "max_new_tokens": body.max_tokens,
           "temperature": body.temperature, "top_k": body.top_k, "top_p": body.top_p}
    try:
        request, options = model.pipe.parse({k: v for k, v in raw.items() if v is not None})
    except ValueError as e:  # ConfigError with the key, e.g. sample.max_new_tokens
        raise errors.invalid(e) from None
    try:
        model.engine.prepare(request, options)
    except ValueError as e:  # FieldError("n", ...), or the prompt cannot be encoded (no field: the prompt)
        raise errors.invalid(e, default="prompt") from None
    return request, options


# ---------------------------------------------------------------------- predict
def predict(state: ServerState, call: Completion) -> Generation:
    """Queue one engine job per prompt, all or none (a full queue cancels those already queued)."""
    loop = asyncio.get_running_loop()
    jobs: list[Job] = []

    def overflow() -> None:
        for job in jobs:
            job.cancel()

    limit = state.settings.stream_buffer if call.body.stream else None  # a whole response is read as it comes
    queue = EventQueue(limit, overflow)

    try:
        with errors.queue_errors():
            for k, (request, options) in enumerate(call.prompts):
                bridge = EventBridge(loop, queue, k)
                jobs.append(call.model.engine.submit(request, options, sink=bridge))
    except APIError:
        for job in jobs:
            job.cancel()
        raise
    timeout = state.settings.timeout
    return Generation(jobs=jobs, queue=queue, tracker=Tracker(state.metrics, call.model.name, call.arrived, jobs),
                      deadline=call.arrived + timeout if timeout else None)


# ---------------------------------------------------------------------- encode_response
def _choice(text: str, index: int, reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": reason}


def _usage(done: list[JobDone]) -> dict[str, int]:
    prompt, completion = sum(d.prompt_tokens for d in done), sum(d.completion_tokens for d in done)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _timeout(settings: ServeSettings) -> str:
    return f"the request took longer than --timeout {settings.timeout:g} s and was cancelled"


async def encode_response(call: Completion, generation: Generation, request: Request,
                          settings: ServeSettings) -> JSONResponse:
    """The whole completion as one response (cancelled if the client leaves first; 504 past the deadline)."""
    texts: dict[tuple[int, int], str] = defaultdict(str)
    reasons: dict[int, dict[int, str]] = defaultdict(dict)
    done: dict[int, JobDone] = {}
    watcher = asyncio.create_task(cancel_on_disconnect(request, generation.jobs))
    try:
        async for k, event in generation.events():
            if isinstance(event, TextPiece):
                texts[k, event.index] += event.text
            elif isinstance(event, SampleDone):
                reasons[k][event.index] = event.reason
            elif isinstance(event, JobDone):
                done[k] = event
    except asyncio.TimeoutError:
        generation.cancel()
        raise APIError(504, _timeout(settings), code="timeout") from None
    finally:
        watcher.cancel()
    choices = []
    for k, (req, _) in enumerate(call.prompts):
        if done[k].error:
            raise APIError(500, f"generation failed: {done[k].error}")
        prefix = (req.prompt or "") if call.body.echo else ""
        choices += [_choice(prefix + texts[k, i], k * call.body.n + i, reasons[k][i]) for i in range(len(reasons[k]))]
    generation.tracker.finished(200)
    return JSONResponse({**call.meta, "choices": choices, "usage": _usage(list(done.values())),
                         "genforge": {"seed": call.seed}})


async def encode_stream(call: Completion, generation: Generation, settings: ServeSettings) -> AsyncIterator[bytes]:
    """Server-sent events: a chunk per piece of final text, then the finish reasons and usage, then ``[DONE]``."""
    def chunk(choices: list[dict], **extra: Any) -> bytes:
        return f"data: {json.dumps({**call.meta, 'choices': choices, **extra})}\n\n".encode()

    n, finish, done = call.body.n, [], []
    try:
        if call.body.echo:
            for k, (req, _) in enumerate(call.prompts):
                yield chunk([_choice(req.prompt or "", k * n + i, None) for i in range(n)])
        try:
            async for k, event in generation.events():
                if isinstance(event, TextPiece):
                    yield chunk([_choice(event.text, k * n + event.index, None)])
                elif isinstance(event, SampleDone):
                    finish.append(_choice("", k * n + event.index, event.reason))
                elif isinstance(event, JobDone):
                    done.append(event)
                    if event.error:
                        yield chunk([], error=errors.error_body(500, f"generation failed: {event.error}")["error"])
        except asyncio.TimeoutError:
            generation.cancel()
            yield chunk([], error=errors.error_body(504, _timeout(settings))["error"])
            generation.tracker.finished(504)
            return
        except StreamOverflow:
            generation.cancel()
            generation.tracker.finished(499)
            yield chunk([], error=errors.error_body(499, f"the client fell more than --stream-buffer "
                                                         f"{settings.stream_buffer} events behind; cancelled")["error"])
            return
        include_usage = call.body.stream_options is None or call.body.stream_options.include_usage
        yield chunk(finish, **({"usage": _usage(done)} if include_usage else {}))
        yield b"data: [DONE]\n\n"
        generation.tracker.finished(200)
    finally:
        generation.cancel()  # a client that went away: its jobs stop at the next step
