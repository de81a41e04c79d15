"""Every limit of ``genforge serve`` in one place; out-of-range requests are refused with 400, never clamped."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(kw_only=True)
class ServeSettings:
    """Server limits and options (each a ``genforge serve`` flag).

    Attributes:
        api_key: when set, everything but ``/``, ``/healthz`` and ``/readyz`` needs
            ``Authorization: Bearer <api_key>`` (``/v1/*``, ``/openapi.json``, ``/metrics``).
        max_batch: text rows decoded together / images drawn in one forward pass, per model.
        max_queue: requests allowed to wait per model; beyond, 429 with ``Retry-After``.
        timeout: seconds a request may take from arrival to its last byte (0 = no limit); beyond, 504.
        max_tokens: the largest ``max_tokens`` a completion may ask for.
        max_n: the largest ``n`` of a completion.
        max_images: the largest ``n`` of an image request.
        max_prompt_chars: the longest prompt, in characters.
        max_body_bytes: the largest request body; beyond, 413.
        batch_window_s: how long an image request waits for others to share its batch.
        max_steps: the largest ``steps`` a diffusion image request may ask for (sampling cost).
        stream_buffer: events one streamed response may hold for a client that reads slower than it is
            generated; beyond, its generation is cancelled.
        write_timeout: seconds one write to a client may wait (a client that stops reading); beyond,
            the connection is closed and its generation cancelled.
    """

    api_key: str | None = None
    max_batch: int = 32
    max_queue: int = 64
    timeout: float = 300.0
    max_tokens: int = 4096
    max_n: int = 8
    max_images: int = 16
    max_prompt_chars: int = 32_768
    max_body_bytes: int = 1 << 20
    batch_window_s: float = 0.01
    max_steps: int = 1000
    stream_buffer: int = 1024
    write_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name, (low, high) in BOUNDS.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"--{FLAGS.get(name, name.replace('_', '-'))} must be in [{_num(low)}, "
                                 f"{_num(high)}], got {_num(value)}")
        if self.max_n > self.max_batch:
            raise ValueError(f"--max-n ({self.max_n}) must not exceed --max-batch ({self.max_batch}): "
                             f"a request's samples are decoded together")
        if self.api_key is not None and not KEY.fullmatch(self.api_key):
            raise ValueError("the API key must be 1 to 256 visible ASCII characters (no spaces): HTTP headers "
                             "cannot carry others")


KEY = re.compile(r"[\x21-\x7e]{1,256}")
FLAGS = {"batch_window_s": "batch-window"}
BOUNDS: dict[str, tuple[float, float]] = {  # every option, bounded at start-up: [low, high]
    "max_batch": (1, 4096), "max_queue": (0, 100_000), "timeout": (0, 86_400), "max_tokens": (1, 10_000_000),
    "max_n": (1, 4096), "max_images": (1, 4096), "max_prompt_chars": (1, 10_000_000),
    "max_body_bytes": (1, 1 << 30), "batch_window_s": (0, 10), "max_steps": (1, 100_000),
    "stream_buffer": (16, 1_000_000), "write_timeout": (0.1, 3600)}


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"
