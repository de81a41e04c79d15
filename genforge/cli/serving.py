"""``genforge serve``: its flags and the call into ``genforge.serve`` (imported only when it runs)."""

from __future__ import annotations

import argparse
import os

from genforge.cli.args import finite_float, positive_int


def port_number(text: str) -> int:
    """An argparse type: a TCP port in [0, 65535] (0 = any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in [0, 65535], got {value}")
    return value


def _add_serve(sub) -> None:
    from genforge.serve.settings import ServeSettings

    d = ServeSettings()
    p = sub.add_parser("serve", help="serve runs over an OpenAI-compatible HTTP API with a web page",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Serve trained runs: /v1/models, /v1/completions (streaming), "
                                   "/v1/images/generations (b64_json), /healthz, /readyz, /metrics (Prometheus) "
                                   "and a web page at /. Each run is a model named after its directory, or "
                                   "NAME=RUN. Every limit below is enforced: requests over it get a 400 naming "
                                   "the field, never a silently clamped value. Needs the serve extra: "
                                   "pip install 'genforge[serve]'.",
                       epilog="example:\n  genforge serve runs/shakespeare-char digits=runs/digits-dcgan --port 8000\n"
                              "  curl -s localhost:8000/v1/completions -H 'Content-Type: application/json' \\\n"
                              "       -d '{\"model\": \"shakespeare-char\", \"prompt\": \"ROMEO:\", \"max_tokens\": 50}'")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories to serve, as RUN or NAME=RUN")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=port_number, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help="require 'Authorization: Bearer KEY' (visible ASCII) on everything but /, /healthz and "
                        "/readyz: /v1/*, /openapi.json, /metrics (default: $GENFORGE_API_KEY when set, else no key)")
    p.add_argument("--max-batch", type=positive_int, default=d.max_batch, metavar="N",
                   help=f"text sequences decoded together / images drawn in one pass, per model (default: "
                        f"{d.max_batch})")
    p.add_argument("--max-queue", type=int, default=d.max_queue, metavar="N",
                   help=f"requests waiting per model before 429 + Retry-After (default: {d.max_queue})")
    p.add_argument("--timeout", type=finite_float, default=d.timeout, metavar="S",
                   help=f"seconds a request may take before it is cancelled with 504; 0 = no limit (default: "
                        f"{d.timeout:g})")
    p.add_argument("--max-tokens", type=positive_int, default=d.max_tokens, metavar="N",
                   help=f"largest max_tokens of a completion (default: {d.max_tokens})")
    p.add_argument("--max-n", type=positive_int, default=None, metavar="N",
                   help=f"largest n (samples) of a completion, at most --max-batch (default: {d.max_n}, or "
                        f"--max-batch when smaller)")
    p.add_argument("--max-images", type=positive_int, default=d.max_images, metavar="N",
                   help=f"largest n of an image request (default: {d.max_images})")
    p.add_argument("--max-prompt-chars", type=positive_int, default=d.max_prompt_chars, metavar="N",
                   help=f"longest prompt in characters (default: {d.max_prompt_chars})")
    p.add_argument("--max-body-bytes", type=positive_int, default=d.max_body_bytes, metavar="N",
                   help=f"largest request body before 413 (default: {d.max_body_bytes})")
    p.add_argument("--max-steps", type=positive_int, default=d.max_steps, metavar="N",
                   help=f"largest sampler steps of a diffusion image request (default: {d.max_steps})")
    p.add_argument("--batch-window", type=finite_float, default=d.batch_window_s, metavar="S",
                   help=f"seconds an image request waits for others to share its batch (default: "
                        f"{d.batch_window_s:g})")
    p.add_argument("--stream-buffer", type=positive_int, default=d.stream_buffer, metavar="N",
                   help=f"events a stream may hold for a client reading slower than generation before it is "
                        f"cancelled (default: {d.stream_buffer})")
    p.add_argument("--write-timeout", type=finite_float, default=d.write_timeout, metavar="S",
                   help=f"seconds one write may wait for a client that stopped reading before the connection "
                        f"is closed (default: {d.write_timeout:g})")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level; debug also logs every request (default: info)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from genforge.config import ConfigError

    try:
        import importlib.util

        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401

        if not any(importlib.util.find_spec(m) for m in ("python_multipart", "multipart")):  # /v1/images/edits
            raise ImportError(name="python-multipart")

        from genforge import serve
    except ImportError as e:
        raise ConfigError(f"genforge serve needs the serve extra ({e.name} is not installed): "
                          f"pip install 'genforge[serve]'") from None
    default_n = serve.ServeSettings().max_n
    settings = serve.ServeSettings(api_key=args.api_key or os.environ.get("GENFORGE_API_KEY") or None,
                                   max_batch=args.max_batch, max_queue=args.max_queue, timeout=args.timeout,
                                   max_tokens=args.max_tokens, max_n=args.max_n or min(default_n, args.max_batch),
                                   max_images=args.max_images, max_prompt_chars=args.max_prompt_chars,
                                   max_body_bytes=args.max_body_bytes, batch_window_s=args.batch_window,
                                   max_steps=args.max_steps, stream_buffer=args.stream_buffer,
                                   write_timeout=args.write_timeout)
    try:
        serve.run(args.runs, host=args.host, port=args.port, settings=settings, log_level=args.log_level)
    except serve.LoadError as e:  # a run that passed the checks but cannot load: one line, exit 2
        raise ConfigError(str(e)) from None
    return 0
