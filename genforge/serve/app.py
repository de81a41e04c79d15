"""The HTTP app: OpenAI-shaped routes over the sampling pipelines, their batching engines and Prometheus metrics.

Every request is decoded (pydantic), checked against the server's limits,
handed to the model's :class:`~genforge.sampling.engine.TextEngine` or
:class:`~genforge.sampling.batcher.ImageBatcher` (threads: model work never
runs on the event loop) and encoded back. Nothing here generates anything.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import difflib
import hmac
import io
import secrets
import threading
import time
import uuid
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from genforge.config import ConfigError
from genforge.serve import errors
from genforge.serve.errors import APIError
from genforge.serve.metrics import Metrics, Tracker
from genforge.serve.middleware import BodyLimit, EventBridge, Gate
from genforge.serve.registry import ServedModel
from genforge.serve.schemas import ChatRequest, CompletionRequest, ImageGenerationRequest
from genforge.serve.settings import ServeSettings
from genforge.sampling.engine import EngineClosed, JobDone, QueueFull, SampleDone, TextPiece

OPEN_PATHS = ("/", "/healthz", "/readyz", "/metrics", "/favicon.ico")
OPTION_PARAMS = {"max_new_tokens": "max_tokens"}  # genforge option names → the request fields that set them


def _png(image) -> str:
    """uint8 [C, H, W] → base64 PNG."""
    from PIL import Image

    arr = image.permute(1, 2, 0).numpy()
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if mode == "L" else arr, mode=mode).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _param_of(message: str, fields: set[str]) -> str | None:
    """The request field a genforge validation message is about (``sample.temperature must ...`` → temperature)."""
    text = message.replace("sample.", "")
    for name in sorted(fields | set(OPTION_PARAMS), key=len, reverse=True):
        if text.startswith(name) or f"{name!r}" in text or f" {name} " in f" {text} ":
            return OPTION_PARAMS.get(name, name)
    return None


def create_app(models: list[ServedModel], settings: ServeSettings | None = None, *,
               load_async: bool = True) -> FastAPI:
    """The app serving ``models`` (checked, not yet loaded): they load at start-up, in a thread when
    ``load_async`` (``/readyz`` is 503 until then)."""
    settings = settings or ServeSettings()
    metrics = Metrics()
    by_name = {m.name: m for m in models}
    state = {"ready": False, "error": None, "closing": False}

    def load_all() -> None:
        try:
            for m in models:
                m.load(settings, on_batch=lambda rows, name=m.name: metrics.batch_size.labels(model=name).observe(rows))
                metrics.watch(m.name, lambda m=m: m.running, lambda m=m: m.waiting)
            state["ready"] = True
        except Exception as e:  # noqa: BLE001 - reported by /readyz and the log
            state["error"] = f"{type(e).__name__}: {e}"
            print(f"genforge serve: loading failed: {state['error']}", flush=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if load_async:
            threading.Thread(target=load_all, name="genforge-load", daemon=True).start()
        else:
            load_all()
        yield
        state["closing"] = True
        for m in models:
            m.close()

    app = FastAPI(title="genforge", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.metrics, app.state.models, app.state.settings = metrics, by_name, settings

    def on_error(request: Request | None, status: int) -> None:
        metrics.answered(getattr(request.state, "model", "") if request is not None else "", status)

    errors.install(app, on_error)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, on_error=on_error)

    def gate(scope) -> Response | None:
        """API key on everything but the open paths; 503 for the API while the models load."""
        path = scope["path"]
        if path in OPEN_PATHS or path.startswith("/docs") or path == "/openapi.json":
            return None
        if settings.api_key is not None:
            header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            given = header[7:] if header[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
                on_error(None, 401)
                return errors.error_response(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                             "authorization", "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        if not state["ready"] and path.startswith("/v1/"):
            on_error(None, 503)
            why = f"loading failed: {state['error']}" if state["error"] else "the models are still loading"
            return errors.error_response(503, f"not ready: {why}", code="not_ready", headers={"Retry-After": "5"})
        return None

    app.add_middleware(Gate, check=gate)

    def lookup(request: Request, name: str, task: str) -> ServedModel:
        request.state.model = name if name in by_name else ""
        model = by_name.get(name)
        if model is None:
            raise APIError(404, f"model {name!r} does not exist; this server has: {', '.join(by_name)}", param="model",
                           code="model_not_found")
        if model.task != task:
            where = "/v1/completions" if model.task == "text" else "/v1/images/generations"
            raise APIError(400, f"model {name!r} is a {model.task} model ({model.info.get('family')}); use {where}",
                           param="model", code="wrong_task")
        return model

    # ------------------------------------------------------------------ plain routes
    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(files("genforge.serve").joinpath("page.html").read_text(encoding="utf-8"))

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if state["ready"] and not state["closing"]:
            return {"status": "ready", "models": list(by_name)}
        why = "closing" if state["closing"] else (f"loading failed: {state['error']}" if state["error"] else "loading")
        return errors.error_response(503, f"not ready: {why}", code="not_ready", headers={"Retry-After": "5"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    def card(m: ServedModel) -> dict[str, Any]:
        return {"id": m.name, "object": "model", "created": m.created, "owned_by": "genforge", "genforge": m.info}

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [card(m) for m in models]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str) -> dict:
        if name not in by_name:
            raise APIError(404, f"model {name!r} does not exist; this server has: {', '.join(by_name)}",
                           param="model", code="model_not_found")
        return card(by_name[name])

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        model = lookup(request, body.model, "text")
        raise APIError(400, f"model {model.name!r} is a plain {model.info['family']} language model without a chat "
                            f"format; send its text to /v1/completions as a prompt", param="model",
                       code="no_chat_format")

    # ------------------------------------------------------------------ completions
    def text_jobs(body: CompletionRequest, model: ServedModel, seed: int) -> list[tuple[Any, Any]]:
        """Validated (TextRequest, options) per prompt; APIError naming the field otherwise."""
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
        stops = body.stops()
        if len(stops) > 4 or any(not s or len(s) > 256 for s in stops):
            raise APIError(400, "stop must be at most 4 non-empty strings of at most 256 characters", param="stop")
        out = []
        for prompt in prompts:
            if prompt is not None and len(prompt) > settings.max_prompt_chars:
                raise APIError(400, f"prompt is {len(prompt)} characters; the limit is {settings.max_prompt_chars}",
                               param="prompt", code="limit")
            raw = {"prompt": prompt, "n": body.n, "seed": seed, "stop": stops, "max_new_tokens": body.max_tokens,
                   "temperature": body.temperature, "top_k": body.top_k, "top_p": body.top_p}
            try:
                request, options = model.pipe.parse({k: v for k, v in raw.items() if v is not None})
            except (ConfigError, ValueError) as e:
                message = str(e).replace("sample.", "").replace("max_new_tokens", "max_tokens")
                raise APIError(400, message, param=_param_of(str(e), set(raw))) from None
            try:
                model.engine.prepare(request, options)
            except ValueError as e:  # the prompt cannot be encoded (or is empty), or n is over the batch rows
                param = "n" if str(e).startswith("n must") else "prompt"
                raise APIError(400, f"{param}: {e}" if param == "prompt" else str(e), param=param) from None
            out.append((request, options))
        return out

    def submit(model: ServedModel, request, options, bridge: EventBridge):
        try:
            return model.engine.submit(request, options, sink=bridge)
        except QueueFull as e:
            raise APIError(429, f"the server is busy: {e}; retry later", code="queue_full",
                           headers={"Retry-After": "1"}) from None
        except EngineClosed as e:
            raise APIError(503, str(e), code="shutting_down") from None

    async def watch_disconnect(request: Request, jobs: list) -> None:
        """Cancel ``jobs`` when the client goes away (non-streaming requests)."""
        while True:
            if await request.is_disconnected():
                for job in jobs:
                    job.cancel()
                return
            await asyncio.sleep(0.05)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        arrived = time.perf_counter()
        model = lookup(request, body.model, "text")
        seed = body.seed if body.seed is not None else secrets.randbits(31)
        parsed = text_jobs(body, model, seed)
        loop = asyncio.get_running_loop()
        bridges = [EventBridge(loop) for _ in parsed]
        jobs = []
        try:
            for (req, opts), bridge in zip(parsed, bridges):
                jobs.append(submit(model, req, opts, bridge))
        except APIError:
            for job in jobs:
                job.cancel()
            raise
        meta = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": model.name}
        run = Tracker(metrics, model.name, arrived, jobs)
        if body.stream:
            include_usage = body.stream_options is None or body.stream_options.include_usage
            return StreamingResponse(stream(meta, body, parsed, bridges, jobs, run, include_usage),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Genforge-Seed": str(seed)})
        watcher = asyncio.create_task(watch_disconnect(request, jobs))
        try:
            results = await asyncio.wait_for(asyncio.gather(*(collect(b, run) for b in bridges)),
                                             timeout=settings.timeout or None)
        except asyncio.TimeoutError:
            for job in jobs:
                job.cancel()
            raise APIError(504, f"the request took longer than --timeout {settings.timeout:g} s and was cancelled",
                           code="timeout") from None
        finally:
            watcher.cancel()
        choices, usage = [], {"prompt_tokens": 0, "completion_tokens": 0}
        for k, ((req, _), (texts, reasons, done)) in enumerate(zip(parsed, results)):
            if done.error:
                raise APIError(500, f"generation failed: {done.error}")
            prefix = (req.prompt or "") if body.echo else ""
            for i, text in enumerate(texts):
                choices.append({"text": prefix + text, "index": k * body.n + i, "logprobs": None,
                                "finish_reason": reasons[i]})
            usage["prompt_tokens"] += done.prompt_tokens
            usage["completion_tokens"] += done.completion_tokens
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        run.finished(200)
        return JSONResponse({**meta, "choices": choices, "usage": usage, "genforge": {"seed": seed}})

    async def collect(bridge: EventBridge, run: Tracker) -> tuple[list[str], dict[int, str], JobDone]:
        texts: dict[int, str] = {}
        reasons: dict[int, str] = {}
        while True:
            event = await bridge.queue.get()
            run.saw(event)
            if isinstance(event, TextPiece):
                texts[event.index] = texts.get(event.index, "") + event.text
            elif isinstance(event, SampleDone):
                reasons[event.index] = event.reason
            elif isinstance(event, JobDone):
                return [texts.get(i, "") for i in range(len(reasons))], reasons, event

    async def stream(meta, body: CompletionRequest, parsed, bridges, jobs, run: Tracker,
                     include_usage: bool) -> AsyncIterator[bytes]:
        """Server-sent events: a chunk per piece of text, finish chunks, usage, then ``[DONE]``."""
        def chunk(choices: list[dict], **extra: Any) -> bytes:
            import json

            return f"data: {json.dumps({**meta, 'choices': choices, **extra})}\n\n".encode()

        merged: asyncio.Queue = asyncio.Queue()

        async def pump(k: int, bridge: EventBridge) -> None:
            while True:
                event = await bridge.queue.get()
                await merged.put((k, event))
                if isinstance(event, JobDone):
                    return

        pumps = [asyncio.create_task(pump(k, b)) for k, b in enumerate(bridges)]
        deadline = run.arrived + settings.timeout if settings.timeout else None
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        left, finish = len(bridges), []
        try:
            if body.echo:
                for k, (req, _) in enumerate(parsed):
                    yield chunk([{"text": req.prompt or "", "index": k * body.n + i, "logprobs": None,
                                  "finish_reason": None} for i in range(body.n)])
            while left:
                timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
                try:
                    k, event = await asyncio.wait_for(merged.get(), timeout)
                except asyncio.TimeoutError:
                    for job in jobs:
                        job.cancel()
                    yield chunk([], error=errors.error_body(504, f"the request took longer than --timeout "
                                                                 f"{settings.timeout:g} s and was cancelled")["error"])
                    run.finished(504)
                    return
                run.saw(event)
                if isinstance(event, TextPiece):
                    yield chunk([{"text": event.text, "index": k * body.n + event.index, "logprobs": None,
                                  "finish_reason": None}])
                elif isinstance(event, SampleDone):
                    finish.append({"text": "", "index": k * body.n + event.index, "logprobs": None,
                                   "finish_reason": event.reason})
                elif isinstance(event, JobDone):
                    left -= 1
                    usage["prompt_tokens"] += event.prompt_tokens
                    usage["completion_tokens"] += event.completion_tokens
                    if event.error:
                        yield chunk([], error=errors.error_body(500, f"generation failed: {event.error}")["error"])
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            yield chunk(finish, **({"usage": usage} if include_usage else {}))
            yield b"data: [DONE]\n\n"
            run.finished(200)
        finally:
            for job in jobs:  # a client that went away: stop at the next step
                job.cancel()
            for p in pumps:
                p.cancel()

    # ------------------------------------------------------------------ images
    @app.post("/v1/images/generations")
    async def images(body: ImageGenerationRequest, request: Request):
        arrived = time.perf_counter()
        model = lookup(request, body.model, "image")
        if body.response_format == "url":
            raise APIError(400, "response_format 'url' is not supported: genforge returns images inline as "
                                "b64_json", param="response_format")
        for name in ("quality", "style"):
            if getattr(body, name) is not None:
                raise APIError(400, f"{name} is not supported by genforge's image models", param=name)
        if body.n > settings.max_images:
            raise APIError(400, f"n must be <= {settings.max_images} on this server, got {body.n}", param="n",
                           code="limit")
        info = model.info
        if body.size is not None and body.size != f"{info['image_size']}x{info['image_size']}":
            raise APIError(400, f"size must be {info['image_size']}x{info['image_size']} (this model's only size), "
                                f"got {body.size!r}", param="size")
        label = body.label
        if label is None and body.prompt:
            if not info["num_classes"]:
                raise APIError(400, f"model {model.name!r} is unconditional: it takes no prompt (send an empty one)",
                               param="prompt")
            label = body.prompt
        seed = body.seed if body.seed is not None else secrets.randbits(31)
        family = model.pipe.model.sample_options
        allowed = {f.name for f in dataclasses.fields(family)}
        for name in body.family_options():
            if name not in allowed:
                fields = sorted(set(ImageGenerationRequest.model_fields) | allowed)
                close = difflib.get_close_matches(name, fields, n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise APIError(400, f"unknown field {name!r}{hint} (this model takes: {', '.join(fields)})",
                               param=name, code="unknown_field")
        raw = {**body.family_options(), "n": body.n, "seed": seed, **({"label": label} if label is not None else {})}
        try:
            req, options = model.pipe.parse(raw)
        except (ConfigError, ValueError) as e:
            message = str(e).replace("sample.", "")
            param = "prompt" if body.label is None and label is not None and "label" in message else \
                _param_of(str(e), set(raw))
            raise APIError(400, message, param=param) from None
        steps = getattr(options, "steps", None)
        if isinstance(steps, int) and steps > settings.max_steps:
            raise APIError(400, f"steps must be <= {settings.max_steps} on this server, got {steps}", param="steps",
                           code="limit")
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        try:
            job = model.batcher.submit(req.n, label=req.label, seed=seed, options=options,
                                       notify=lambda: loop.call_soon_threadsafe(
                                           lambda: done.done() or done.set_result(None)))
        except QueueFull as e:
            raise APIError(429, f"the server is busy: {e}; retry later", code="queue_full",
                           headers={"Retry-After": "1"}) from None
        except EngineClosed as e:
            raise APIError(503, str(e), code="shutting_down") from None
        watcher = asyncio.create_task(watch_disconnect(request, [job]))
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout=settings.timeout or None)
        except asyncio.TimeoutError:
            job.cancel()
            raise APIError(504, f"the request took longer than --timeout {settings.timeout:g} s", code="timeout") \
                from None
        finally:
            watcher.cancel()
        if job.images is None:
            raise APIError(500 if job.error != "cancelled" else 499, f"generation failed: {job.error}")
        encoded = await asyncio.to_thread(lambda: [_png(im) for im in job.images])
        metrics.images.labels(model=model.name).inc(req.n)
        metrics.queue_time.labels(model=model.name).observe(job.started - job.submitted)
        metrics.latency.labels(model=model.name).observe(time.perf_counter() - arrived)
        metrics.answered(model.name, 200)
        options_out = {k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
                       for k, v in vars(options).items()}
        return {"created": int(time.time()), "data": [{"b64_json": b, "revised_prompt": None} for b in encoded],
                "genforge": {"seed": seed, "label": req.label, "options": options_out, "model": model.name}}

    return app
