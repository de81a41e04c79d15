"""Progress lines of the evaluation layer: one helper, so every one of them goes to stderr the same way."""

from __future__ import annotations

import sys
import time

__all__ = ["Clock", "log"]


def log(on: bool, msg: str, *, prefix: str = "eval: ") -> None:
    """Print ``prefix + msg`` to stderr (flushed) when ``on``; nothing otherwise."""
    if on:
        print(f"{prefix}{msg}", file=sys.stderr, flush=True)


class Clock:
    """Stage timer: ``with clock("stage"): ...`` adds the seconds to ``clock.timings``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def __call__(self, stage: str) -> Clock:
        self._stage = stage
        return self

    def __enter__(self) -> None:
        self._t = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self._stage] = round(self.timings.get(self._stage, 0.0) + time.perf_counter() - self._t, 4)
