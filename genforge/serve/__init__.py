"""``genforge serve``: an OpenAI-compatible HTTP API and a web page over trained runs.

    >>> from genforge.serve import create_app, check_specs, ServeSettings
    >>> app = create_app(check_specs(["runs/shakespeare-char", "digits=runs/digits-dcgan"]), ServeSettings())

Routes (see the README): ``/v1/models``, ``/v1/completions`` (streaming with
server-sent events), ``/v1/chat/completions`` (a clear 400: no chat format),
``/v1/images/generations`` (``b64_json`` PNGs), ``/healthz``, ``/readyz``,
``/metrics`` (Prometheus) and ``/`` (the page). Needs the ``serve`` extra
(FastAPI, uvicorn, prometheus_client).
"""

from __future__ import annotations

from typing import Any

from genforge.serve.settings import ServeSettings


def check_specs(specs: list[str]) -> list[Any]:
    """The :class:`~genforge.serve.registry.ServedModel` of each ``RUN`` / ``NAME=RUN``, checked, not loaded."""
    from genforge.serve.registry import check_specs as check

    return check(specs)


def create_app(models, settings=None, **kwargs):
    """The FastAPI app for checked ``models`` (see :func:`genforge.serve.app.create_app`)."""
    from genforge.serve.app import create_app as build

    return build(models, settings, **kwargs)


class LoadError(RuntimeError):
    """A served model could not be loaded; ``genforge serve`` stopped (one line naming the model)."""


def run(specs: list[str], *, host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings | None = None,
        log_level: str = "info") -> None:
    """Check ``specs``, then serve them with uvicorn until SIGINT/SIGTERM (in-flight requests get
    ``settings.timeout`` seconds, at most 30, to finish; generation is then cancelled). A model that
    cannot load stops the server: :class:`LoadError` naming it."""
    import uvicorn

    settings = settings or ServeSettings()
    models = check_specs(specs)
    app = create_app(models, settings)
    grace = min(30.0, settings.timeout) if settings.timeout else 30.0
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=grace,
                            access_log=log_level == "debug")
    server = uvicorn.Server(config)
    state = app.state.server
    state.on_failure = lambda _error: setattr(server, "should_exit", True)
    server.run()
    if state.error:
        raise LoadError(state.error)


__all__ = ["LoadError", "ServeSettings", "check_specs", "create_app", "run"]
