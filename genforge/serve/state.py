"""What every route of one app shares: settings, metrics, the models by name and their readiness.

One :class:`ServerState` per app, on ``app.state.server``; routes get it with ``Depends(server_state)``.
"""

from __future__ import annotations

import hmac
import sys
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response

from genforge.serve import errors
from genforge.serve.errors import APIError
from genforge.serve.metrics import Metrics
from genforge.serve.registry import ServedModel
from genforge.serve.settings import ServeSettings

OPEN_PATHS = ("/", "/healthz", "/readyz", "/favicon.ico")  # no API key (the page asks for it); all else needs it
ROUTE_OF_TASK = {"text": "/v1/completions", "image": "/v1/images/generations"}


@dataclass(eq=False)
class ServerState:
    """Settings, metrics and the models of one app; ``ready`` once every model loaded, ``error`` if one failed."""

    settings: ServeSettings
    models: dict[str, ServedModel]
    load_async: bool = True
    metrics: Metrics = field(default_factory=Metrics)
    ready: bool = False
    error: str | None = None
    closing: bool = False
    on_failure: Callable[[str], None] | None = None  # called with the one-line error when a model fails to load

    # ------------------------------------------------------------------ lifecycle
    def load_all(self) -> None:
        """Load every model and start its engine. A model that fails is named in one line, kept for
        ``/healthz`` and ``/readyz`` and passed to ``on_failure`` (``genforge serve`` then stops)."""
        for m in self.models.values():
            try:
                m.load(self.settings, on_batch=lambda rows, name=m.name: self.metrics.batch_size.labels(
                    model=name).observe(rows))
            except Exception as e:  # noqa: BLE001 - reported by /healthz, /readyz and on_failure
                why = " ".join(f"{type(e).__name__}: {e}".split())
                self.error = f"cannot load model {m.name!r} ({m.path}): {why}"
                if self.on_failure is not None:
                    self.on_failure(self.error)
                else:
                    print(f"genforge serve: {self.error}", file=sys.stderr, flush=True)
                return
            self.metrics.watch(m.name, lambda m=m: m.running, lambda m=m: m.waiting)
        self.ready = True

    def start(self) -> None:
        if self.load_async:
            threading.Thread(target=self.load_all, name="genforge-load", daemon=True).start()
        else:
            self.load_all()

    def close(self) -> None:
        self.closing = True
        for m in self.models.values():
            m.close()

    def not_ready(self) -> str | None:
        """Why the API cannot answer yet (``loading``, ``loading failed: ...``, ``closing``), or None."""
        if self.ready and not self.closing:
            return None
        if self.closing:
            return "closing"
        return f"loading failed: {self.error}" if self.error else "loading"

    # ------------------------------------------------------------------ requests
    def counted(self, request: Request | None, status: int) -> None:
        """Count an error response under the model the request named (if any)."""
        self.metrics.answered(getattr(request.state, "model", "") if request is not None else "", status)

    def lookup(self, request: Request, name: str, task: str) -> ServedModel:
        """The model ``name`` serving ``task``; 404 / 400 naming ``model`` otherwise."""
        request.state.model = name if name in self.models else ""
        model = self.model(name)
        if model.task != task:
            raise APIError(400, f"model {name!r} is a {model.task} model ({model.info.get('family')}); use "
                                f"{ROUTE_OF_TASK[model.task]}", param="model", code="wrong_task")
        return model

    def model(self, name: str) -> ServedModel:
        if name not in self.models:
            raise APIError(404, f"model {name!r} does not exist; this server has: {', '.join(self.models)}",
                           param="model", code="model_not_found")
        return self.models[name]

    def gate(self, scope: dict[str, Any]) -> Response | None:
        """The API key on everything but :data:`OPEN_PATHS`; 503 for the API while the models load."""
        path = scope["path"]
        if path in OPEN_PATHS:
            return None
        key = self.settings.api_key
        if key is not None:
            header = dict(scope.get("headers") or []).get(b"authorization", b"")
            given = header[7:] if header[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(given, key.encode("ascii")):
                self.counted(None, 401)
                return errors.error_response(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                             "authorization", "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        if not self.ready and path.startswith("/v1/"):
            self.counted(None, 503)
            why = f"loading failed: {self.error}" if self.error else "the models are still loading"
            return errors.error_response(503, f"not ready: {why}", code="not_ready", headers={"Retry-After": "5"})
        return None


def server_state(request: Request) -> ServerState:
    """The app's :class:`ServerState` (a FastAPI dependency)."""
    return request.app.state.server


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the models at start-up (in a thread when ``load_async``); close their engines at shutdown."""
    state: ServerState = app.state.server
    state.start()
    yield
    state.close()
