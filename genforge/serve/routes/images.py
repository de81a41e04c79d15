"""``/v1/images/generations``: :func:`decode_request` → :func:`predict` → :func:`encode_response`.

- ``decode_request`` validates once: the HTTP fields against the server's limits and the model's size, the
  names of the family's options (a did-you-mean for unknown ones), then ``model.pipe.parse`` of the options
  and the condition (:func:`condition_fields`) with the model's own bounds, and their cost
  (``options.model_evaluations()`` against ``--max-steps``).
- ``predict`` queues the images on the model's batcher and waits for them.
- ``encode_response`` writes them as base64 PNGs with what reproduces them (seed, label, options).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import secrets
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request

from genforge.config import did_you_mean
from genforge.sampling.batcher import ImageJob
from genforge.serve import errors
from genforge.serve.errors import APIError
from genforge.serve.middleware import cancel_on_disconnect
from genforge.serve.registry import ServedModel
from genforge.serve.schemas import ImageGenerationRequest
from genforge.serve.state import ServerState, server_state

router = APIRouter()


@dataclass(eq=False)
class ImageCall:
    """A validated image request: the model's parsed request (n, seed, label) and sample options."""

    model: ServedModel
    request: Any  # genforge.sampling.images.ImageRequest
    options: Any  # the family's SampleOptions
    arrived: float


@router.post("/v1/images/generations")
async def images(body: ImageGenerationRequest, request: Request, state: ServerState = Depends(server_state)):
    call = decode_request(state, body, request)
    job = await predict(state, call, request)
    return await encode_response(state, call, job)


# ---------------------------------------------------------------------- decode_request
def decode_request(state: ServerState, body: ImageGenerationRequest, request: Request) -> ImageCall:
    """The request, validated once (APIError naming the field)."""
    arrived = time.perf_counter()
    model = state.lookup(request, body.model, "image")
    check_fields(body, model, state)
    condition, sources = condition_fields(body, model)
    check_option_names(body, model)
    seed = body.seed if body.seed is not None else secrets.randbits(31)
    try:  # the request fields, the condition and the family's options, with the model's own checks
        parsed, options = model.pipe.parse({**body.family_options(), "n": body.n, "seed": seed, **condition})
    except ValueError as e:  # ConfigError / FieldError with the field (label, steps, sampler, eta, ...)
        raise errors.invalid(e, names=sources) from None
    steps = options.model_evaluations()
    if steps is not None and steps > state.settings.max_steps:
        raise APIError(400, f"steps must be <= {state.settings.max_steps} on this server, got {steps}",
                       param="steps", code="limit")
    return ImageCall(model=model, request=parsed, options=options, arrived=arrived)


def check_fields(body: ImageGenerationRequest, model: ServedModel, state: ServerState) -> None:
    """OpenAI's fields: what genforge supports, this server's ``n`` limit and the model's one size."""
    if body.response_format == "url":
        raise APIError(400, "response_format 'url' is not supported: genforge returns images inline as b64_json",
                       param="response_format")
    for name in ("quality", "style"):
        if getattr(body, name) is not None:
            raise APIError(400, f"{name} is not supported by genforge's image models", param=name)
    if body.n > state.settings.max_images:
        raise APIError(400, f"n must be <= {state.settings.max_images} on this server, got {body.n}", param="n",
                       code="limit")
    side = model.info["image_size"]
    if body.size is not None and body.size != f"{side}x{side}":
        raise APIError(400, f"size must be {side}x{side} (this model's only size), got {body.size!r}", param="size")


def condition_fields(body: ImageGenerationRequest, model: ServedModel) -> tuple[dict[str, Any], dict[str, str]]:
    """What the images are conditioned on, as fields of ``model.pipe.parse``, and the request field each came
    from where the names differ. The one place that reads ``prompt``: a model that takes text gets it as
    ``prompt``; a class-conditional one reads it as a class name (``label``) unless ``label`` is given; any
    other model gets it as ``prompt`` too, for ``pipe.parse`` to refuse naming it.
    """
    fields: dict[str, Any] = {} if body.label is None else {"label": body.label}
    if not body.prompt:  # OpenAI's client always sends one: "" is no condition
        return fields, {}
    accepted = model.pipe.model.accepted_conditions()
    if "label" in accepted and "text" not in accepted:
        return (fields, {}) if body.label is not None else ({"label": body.prompt}, {"label": "prompt"})
    return {**fields, "prompt": body.prompt}, {}


def check_option_names(body: ImageGenerationRequest, model: ServedModel) -> None:
    """Every extra field is one of the family's sample options (400 with a did-you-mean otherwise)."""
    allowed = {f.name for f in dataclasses.fields(model.pipe.model.sample_options)}
    for name in body.family_options():
        if name not in allowed:
            fields = sorted(set(ImageGenerationRequest.model_fields) | allowed)
            raise APIError(400, f"unknown field {name!r}{did_you_mean(name, fields)} (this model takes: "
                                f"{', '.join(fields)})", param=name, code="unknown_field")


# ---------------------------------------------------------------------- predict
async def predict(state: ServerState, call: ImageCall, request: Request, *, condition: Any = None) -> ImageJob:
    """Queue the images on the model's batcher and wait for them (cancelled if the client leaves; 504);
    ``condition`` replaces the request's own (an edit's source images)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def notify() -> None:  # from the batcher's thread
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    req, timeout = call.request, state.settings.timeout
    with errors.queue_errors():
        given = condition if condition is not None else call.model.pipe.condition(req)
        job = call.model.batcher.submit(req.n, condition=given, seed=req.seed,
                                        options=call.options, notify=notify)
    watcher = asyncio.create_task(cancel_on_disconnect(request, [job]))
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout=timeout or None)
    except asyncio.TimeoutError:
        job.cancel()
        raise APIError(504, f"the request took longer than --timeout {timeout:g} s", code="timeout") from None
    finally:
        watcher.cancel()
    if job.images is None:
        raise APIError(500 if job.error != "cancelled" else 499, f"generation failed: {job.error}")
    return job


# ---------------------------------------------------------------------- encode_response
def png(image) -> str:
    """uint8 [C, H, W] → base64 PNG."""
    from PIL import Image

    arr = image.permute(1, 2, 0).numpy()
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if mode == "L" else arr, mode=mode).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


async def encode_response(state: ServerState, call: ImageCall, job: ImageJob) -> dict[str, Any]:
    """The images as ``b64_json`` PNGs, with the seed, label and options that reproduce them."""
    encoded = await asyncio.to_thread(lambda: [png(im) for im in job.images])
    name, req, metrics = call.model.name, call.request, state.metrics
    metrics.images.labels(model=name).inc(req.n)
    metrics.queue_time.labels(model=name).observe(job.started - job.submitted)
    metrics.latency.labels(model=name).observe(time.perf_counter() - call.arrived)
    metrics.answered(name, 200)
    options = {k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
               for k, v in vars(call.options).items()}
    return {"created": int(time.time()), "data": [{"b64_json": b, "revised_prompt": None} for b in encoded],
            "genforge": {"seed": req.seed, "label": req.label, "options": options, "model": name}}
