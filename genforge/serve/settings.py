"""Every limit of ``genforge serve`` in one place; out-of-range requests are refused with 400, never clamped."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class ServeSettings:
    """Server limits and options (each a ``genforge serve`` flag).

    Attributes:
        api_key: when set, ``/v1/*`` needs ``Authorization: Bearer <api_key>``.
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

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_tokens", "max_n", "max_images", "max_prompt_chars", "max_body_bytes",
                     "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise ValueError(f"--max-queue must be >= 0, got {self.max_queue}")
        if self.timeout < 0:
            raise ValueError(f"--timeout must be >= 0 (0 = no limit), got {self.timeout}")
        if not 0 <= self.batch_window_s <= 10:
            raise ValueError(f"--batch-window must be in [0, 10] seconds, got {self.batch_window_s}")
        if self.max_n > self.max_batch:
            raise ValueError(f"--max-n ({self.max_n}) must not exceed --max-batch ({self.max_batch}): "
                             f"a request's samples are decoded together")
        if self.api_key is not None and not self.api_key:
            raise ValueError("the API key must not be empty")
