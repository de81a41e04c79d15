"""Progress lines of the evaluation layer: one helper, so every one of them goes to stderr the same way."""

from __future__ import annotations

import sys
import time

__all__ = ["Clock", "log", "ticker"]


def log(on: bool, msg: str, *, prefix: str = "eval: ") -> None:
    """Print ``prefix + msg`` to stderr (flushed) when ``on``; nothing otherwise."""
    if on:
        print(f"{prefix}{msg}", file=sys.stderr, flush=True)


def ticker(on: bool, what: str, *, every_s: float = 10.0):
    """A ``(done, total)`` callback for long loops: a progress line (count, seconds, time left) at most every
    ``every_s`` seconds and at the end, so no stage is silent for long; None when ``on`` is False."""
    if not on:
        return None
    start = last = time.perf_counter()

    def tick(done: int, total: int) -> None:
        nonlocal last
        now = time.perf_counter()
        if now - last < every_s and done < total:
            return
        last = now
        left = (now - start) / max(done, 1) * (total - done)
        log(True, f"{what}: {done}/{total} ({now - start:.0f} s, ~{left:.0f} s left)")

    return tick


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
