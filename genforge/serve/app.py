"""The HTTP app: OpenAI-shaped routes over the sampling pipelines, their batching engines and Prometheus metrics.

:func:`create_app` only assembles: a :class:`~genforge.serve.state.ServerState` (settings, metrics, the
models by name, readiness) on ``app.state.server``, the lifespan that loads the models, the error
handlers and middleware, and the routers of :mod:`genforge.serve.routes`. Each route is
``decode_request → predict → encode_response``; model work runs in the models' engine threads
(:class:`~genforge.sampling.engine.TextEngine`, :class:`~genforge.sampling.batcher.ImageBatcher`), never
on the event loop. Nothing here generates anything.
"""

from __future__ import annotations

from fastapi import FastAPI

from genforge.serve import errors
from genforge.serve.middleware import BodyLimit, Gate, WriteTimeout
from genforge.serve.registry import ServedModel
from genforge.serve.routes import ROUTERS
from genforge.serve.settings import ServeSettings
from genforge.serve.state import ServerState, lifespan


def create_app(models: list[ServedModel], settings: ServeSettings | None = None, *,
               load_async: bool = True) -> FastAPI:
    """The app serving ``models`` (checked, not yet loaded): they load at start-up, in a thread when
    ``load_async`` (``/readyz`` is 503 until then)."""
    state = ServerState(settings=settings or ServeSettings(), models={m.name: m for m in models},
                        load_async=load_async)
    app = FastAPI(title="genforge", lifespan=lifespan, docs_url=None, redoc_url=None)  # see routes.system
    app.state.server = state
    app.state.metrics, app.state.models, app.state.settings = state.metrics, state.models, state.settings
    errors.install(app, state.counted)
    app.add_middleware(BodyLimit, limit=state.settings.max_body_bytes, on_error=state.counted)
    app.add_middleware(Gate, check=state.gate)
    app.add_middleware(WriteTimeout, seconds=state.settings.write_timeout)
    for router in ROUTERS:
        app.include_router(router)
    return app
