"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with the right HTTP status."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from genforge.config import ConfigError, FieldError
from genforge.sampling.queue import EngineClosed, QueueFull

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         405: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
         429: "rate_limit_error", 500: "server_error", 503: "service_unavailable", 504: "timeout"}
OPTION_PARAMS = {"max_new_tokens": "max_tokens"}  # genforge option names → the request fields that set them


class APIError(Exception):
    """An error answered as JSON: ``status``, a one-line ``message``, the request field it is about."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def invalid(e: ValueError, *, default: str | None = None, names: Mapping[str, str] | None = None) -> APIError:
    """A genforge validation error as a 400 whose ``param`` is the field the error carries as data
    (:class:`ConfigError` ``.key`` / :class:`FieldError` ``.field``) under its request name: ``names``
    (genforge field → the request field that set it, for this request) or :data:`OPTION_PARAMS`.

    An error without a field is about ``default``, the one field the failed step checks (its message is
    then prefixed with it); None when the step has no single field. Nothing is read from the message.
    """
    field = e.field if isinstance(e, (ConfigError, FieldError)) else None
    message = str(e)
    if isinstance(e, ConfigError) and e.key and field:
        message = message.replace(e.key, field)  # "sample.temperature must ..." → "temperature must ..."
    for ours, theirs in OPTION_PARAMS.items():
        message = message.replace(ours, theirs)
    if field is None and default is not None:
        return APIError(400, f"{default}: {message}", param=default)
    return APIError(400, message, param=(names or {}).get(field) or OPTION_PARAMS.get(field, field))


@contextmanager
def queue_errors() -> Iterator[None]:
    """Submitting to a model's queue: a full queue is 429 with ``Retry-After``, a closing one 503."""
    try:
        yield
    except QueueFull as e:
        raise APIError(429, f"the server is busy: {e}; retry later", code="queue_full",
                       headers={"Retry-After": "1"}) from None
    except EngineClosed as e:
        raise APIError(503, str(e), code="shutting_down") from None


def _field(loc: tuple) -> str:
    """A pydantic location (``("body", "max_tokens")``) as the request field name (``max_tokens``)."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


class NativePanics:
    """ASGI middleware: a panic inside a Rust extension (``pyo3_runtime.PanicException`` derives from
    ``BaseException``, so no exception handler sees it) is answered as a JSON 500 instead of plain text,
    when no response has started yet; every other ``BaseException`` passes through."""

    def __init__(self, app, on_error) -> None:
        self.app, self.on_error = app, on_error

    async def __call__(self, scope, receive, send) -> None:
        started = False

        async def send_started(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_started)
        except BaseException as e:
            panic = type(e).__name__ == "PanicException" and type(e).__module__.startswith("pyo3")
            if not panic or started or scope["type"] != "http":
                raise
            self.on_error(Request(scope), 500)
            message = " ".join(str(e).split())[:300]
            await error_response(500, f"internal error: a native library failed: {message}")(scope, receive, send)


def install(app, on_error) -> None:
    """Register handlers that answer every error in the OpenAI shape; ``on_error(request, status)`` counts it."""
    app.add_middleware(NativePanics, on_error=on_error)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        on_error(request, exc.status)
        return error_response(exc.status, exc.message, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _field(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid value"))
        if first.get("type") == "json_invalid":
            field, message = "body", f"the body is not valid JSON ({first.get('ctx', {}).get('error', message)})"
        elif first.get("type") == "extra_forbidden":
            message = f"unknown field {field!r}"
        else:
            message = f"{field}: {message}"
        on_error(request, 400)
        return error_response(400, message, field, first.get("type"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        on_error(request, exc.status_code)
        message = {404: f"no route {request.method} {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        on_error(request, 500)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")
