"""The routes around the API: the page, health, readiness, Prometheus metrics and the model list.

``/docs`` (Swagger UI) is off: FastAPI's page loads its scripts from a CDN, so it would not work offline,
and no installed package ships the assets; ``/openapi.json`` describes the API (behind the key when set).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response

from genforge.serve import errors
from genforge.serve.registry import ServedModel
from genforge.serve.state import ServerState, server_state

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def page() -> HTMLResponse:
    return HTMLResponse(files("genforge.serve").joinpath("page.html").read_text(encoding="utf-8"))


@router.get("/healthz")
async def healthz(state: ServerState = Depends(server_state)):
    if state.error:  # a model that cannot load: the server is not healthy (``genforge serve`` stops)
        return errors.error_response(503, f"unhealthy: {state.error}", code="load_failed")
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: ServerState = Depends(server_state)):
    why = state.not_ready()
    if why is None:
        return {"status": "ready", "models": list(state.models)}
    return errors.error_response(503, f"not ready: {why}", code="not_ready", headers={"Retry-After": "5"})


@router.get("/metrics")
async def prometheus(state: ServerState = Depends(server_state)) -> Response:
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def card(m: ServedModel) -> dict[str, Any]:
    """A model in OpenAI's shape, with genforge's description (family, task, capabilities, options)."""
    return {"id": m.name, "object": "model", "created": m.created, "owned_by": "genforge", "genforge": m.info}


@router.get("/v1/models")
async def list_models(state: ServerState = Depends(server_state)) -> dict:
    return {"object": "list", "data": [card(m) for m in state.models.values()]}


@router.get("/v1/models/{name}")
async def get_model(name: str, state: ServerState = Depends(server_state)) -> dict:
    return card(state.model(name))
