"""``/v1/images/edits`` in OpenAI's shape (multipart: ``image``, optional ``mask``, ``prompt``, ``n``, ``size``,
``response_format``; genforge's ``strength``, ``seed``, ``label`` and the family's options as more fields):
:func:`decode_request` → :func:`predict` (or :func:`inpaint`) → the generations route's ``encode_response``.

- Without a ``mask``: img2img (SDEdit) of the image from ``strength`` (default 0.6) of the way to noise,
  under the prompt (or label), on the model's batcher like any image request; a family that cannot is a 400.
- With a ``mask``: inpainting (the family's own method: RePaint for diffusion, latent fitting for GAN/VAE) of
  the pixels the mask marks, OpenAI's way (the fully transparent pixels of a mask with alpha; otherwise
  white), known pixels kept exactly; on a worker thread, image i seeded ``seed + i``.

Uploads go through the CLI's image reader (a colour image for a gray model is converted); an image of
another size than the model's, a mask of another size than the image, or a field out of range is one 400
naming the field. Form values are read as YAML scalars, as ``--set`` reads them.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from fastapi import APIRouter, Depends, Request

from genforge.config import parse_override
from genforge.sampling.batcher import ImageJob
from genforge.serve import errors
from genforge.serve.errors import APIError
from genforge.serve.routes.images import ImageCall, check_option_names, encode_response, predict
from genforge.serve.state import ServerState, server_state

router = APIRouter()

DEFAULT_STRENGTH = 0.6
OPENAI = ("model", "image", "mask", "prompt", "n", "size", "response_format", "user")
GENFORGE = ("strength", "seed", "label")


@dataclass
class EditForm:
    """The multipart form: the two uploads as bytes, every other field as a plain value."""

    image: bytes | None
    mask: bytes | None
    values: dict[str, Any]

    def family_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.values.items() if k not in OPENAI and k not in GENFORGE}


@router.post("/v1/images/edits")
async def edits(request: Request, state: ServerState = Depends(server_state)):
    form = await read_form(request)
    call, masked = await asyncio.to_thread(decode_request, state, form, request)
    if masked is None:
        job = await predict(state, call, request, condition=call.request.condition)
    else:
        job = await asyncio.to_thread(inpaint, call, *masked)
    return await encode_response(state, call, job)


async def read_form(request: Request) -> EditForm:
    """The multipart body (at most 2 files and 64 fields; the body's size is bounded by the server)."""
    try:
        form = await request.form(max_files=2, max_fields=64)
    except Exception as e:  # noqa: BLE001 - a malformed body of any kind is the client's
        raise APIError(400, f"the body must be multipart/form-data with an image file: {e}", param="image") from None
    values, uploads = {}, {}
    for key, value in form.multi_items():
        if key in ("image", "mask"):
            if isinstance(value, str):
                raise APIError(400, f"{key} must be an uploaded image file", param=key)
            uploads[key] = await value.read()
        elif not isinstance(value, str):
            raise APIError(400, f"{key} must be a form field, not a file", param=key)
        elif value != "":
            values[key] = value if key in ("prompt", "model", "user", "size", "response_format") else \
                parse_override(f"x={value}")[1]
    if "image" not in uploads:
        raise APIError(400, "image is required: the picture to edit, as a file", param="image")
    return EditForm(uploads.get("image"), uploads.get("mask"), values)


def _read(data: bytes, channels: int, name: str, *, mask: bool = False) -> torch.Tensor:
    """An upload → uint8 [channels, H, W], or for a mask bool [1, H, W] (True = a pixel to edit)."""
    from genforge.data import DataError
    from genforge.sampling.masks import read_edit_mask, read_model_image

    with tempfile.TemporaryDirectory(prefix="genforge-edit-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            return read_edit_mask(path) if mask else read_model_image(path, channels, warn=False)
        except (DataError, ValueError) as e:
            raise APIError(400, f"{name}: {str(e).replace(str(path), 'the upload')}", param=name) from None


def _int(form: EditForm, name: str, default: int) -> int:
    value = form.values.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise APIError(400, f"{name} must be an integer, got {value!r}", param=name)
    return value


def decode_request(state: ServerState, form: EditForm, request: Request) -> tuple[ImageCall, tuple | None]:
    """The form, validated once (APIError naming the field): the call, and for a masked edit (images uint8
    [n, C, S, S], masks bool [n, 1, S, S], the family's inpaint options); None for img2img."""
    arrived = time.perf_counter()
    model = state.lookup(request, str(form.values.get("model", "")), "image")
    c, s = model.info["channels"], model.info["image_size"]
    n, seed = _int(form, "n", 1), _int(form, "seed", secrets.randbits(31))
    if not 1 <= n <= state.settings.max_images:
        raise APIError(400, f"n must be in [1, {state.settings.max_images}] on this server, got {n}", param="n")
    if form.values.get("response_format", "b64_json") != "b64_json":
        raise APIError(400, "response_format must be b64_json: genforge returns images inline",
                       param="response_format")
    if form.values.get("size", f"{s}x{s}") != f"{s}x{s}":
        raise APIError(400, f"size must be {s}x{s} (this model's only size), got {form.values['size']!r}",
                       param="size")
    image = _read(form.image, c, "image")
    if tuple(image.shape[-2:]) != (s, s):
        raise APIError(400, f"image is {image.shape[-1]}x{image.shape[-2]}; this model edits {s}x{s} images",
                       param="image")
    condition = {k: form.values[k] for k in ("prompt", "label") if k in form.values}
    if form.mask is not None:
        return _masked(model, form, image, condition, n, seed, arrived)
    from genforge.models.conditions import Condition
    from genforge.sampling.img2img import require_img2img

    check_option_names(form, model)
    try:
        require_img2img(model.pipe.model, model.name)
        raw = {**form.family_options(), **condition, "n": n, "seed": seed,
               "strength": form.values.get("strength", DEFAULT_STRENGTH)}
        parsed, options = model.pipe.parse(raw)
        given = model.pipe.condition(parsed) or Condition(strength=raw["strength"])
    except ValueError as e:
        raise errors.invalid(e, default="image") from None
    sources = image[None].expand(n, *image.shape).contiguous()  # [n, C, S, S]
    request_ = _Parsed(n=n, seed=seed, label=parsed.label, condition=replace(given, image=sources))
    steps = options.model_evaluations()
    if steps is not None and steps > state.settings.max_steps:
        raise APIError(400, f"steps must be <= {state.settings.max_steps} on this server, got {steps}",
                       param="steps", code="limit")
    return ImageCall(model=model, request=request_, options=options, arrived=arrived), None


def _masked(model, form: EditForm, image: torch.Tensor, condition: dict, n: int, seed: int, arrived: float):
    """A masked edit: the mask checked against the image, the family's inpaint options parsed."""
    from genforge.models.conditions import parse_condition
    from genforge.sampling.inpaint import require_inpaints

    fill = _read(form.mask, 1, "mask", mask=True)
    if tuple(fill.shape[-2:]) != tuple(image.shape[-2:]):
        raise APIError(400, f"mask is {fill.shape[-1]}x{fill.shape[-2]} but image is {image.shape[-1]}x"
                            f"{image.shape[-2]}: they must be the same size", param="mask")
    if not bool(fill.any()):
        raise APIError(400, "mask marks no pixel to edit (transparent, or white without alpha)", param="mask")
    if "strength" in form.values:
        raise APIError(400, "strength applies to an edit without a mask (img2img); a mask is inpainted",
                       param="strength")
    try:
        painter = require_inpaints(model.pipe.model, model.name)
        options = painter.parse_inpaint_options(form.family_options())
        given = parse_condition(painter, condition, extra=("image", "mask"), name=model.name)
    except ValueError as e:
        raise errors.invalid(e, default="mask") from None
    request = _Parsed(n=n, seed=seed, label=None if given is None else given.label, condition=given)
    call = ImageCall(model=model, request=request, options=options, arrived=arrived)
    images = image[None].expand(n, *image.shape).contiguous()
    return call, (images, fill[None].expand(n, *fill.shape).contiguous())


@dataclass
class _Parsed:
    """What ``encode_response`` reads of a request (n, seed, label), and the edit's condition."""

    n: int
    seed: int
    label: Any = None
    condition: Any = None


def inpaint(call: ImageCall, images: torch.Tensor, fill: torch.Tensor) -> ImageJob:
    """Inpaint on this (worker) thread; the result as a finished :class:`ImageJob`."""
    from genforge.sampling.inpaint import inpaint_images

    job = ImageJob(n=call.request.n, condition=None, seed=call.request.seed, options=call.options)
    job.started = time.perf_counter()
    try:
        job.images = inpaint_images(call.model.pipe.model, images, fill, labels=call.request.condition,
                                    seed=call.request.seed, options=call.options)
    except ValueError as e:
        raise errors.invalid(e, default="mask") from None
    return job
