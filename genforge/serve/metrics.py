"""Prometheus metrics of ``genforge serve``, named after vLLM's where one applies (``vllm:`` → ``genforge:``).

One :class:`Metrics` per app, on its own registry (several apps can live in one process, as in tests).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from genforge.sampling.engine import JobDone, Tokens

LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
PER_TOKEN = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        m = ["model"]
        self.running = Gauge("genforge:num_requests_running", "Requests being generated now.", m, registry=r)
        self.waiting = Gauge("genforge:num_requests_waiting", "Requests queued for the model.", m, registry=r)
        self.latency = Histogram("genforge:e2e_request_latency_seconds", "Arrival to last byte, successful "
                                 "requests.", m, buckets=LATENCY, registry=r)
        self.queue_time = Histogram("genforge:request_queue_time_seconds", "Time waiting before generation "
                                    "started.", m, buckets=LATENCY, registry=r)
        self.ttft = Histogram("genforge:time_to_first_token_seconds", "Arrival to the first generated token.",
                              m, buckets=LATENCY, registry=r)
        self.tpot = Histogram("genforge:time_per_output_token_seconds", "Mean time between tokens of a request "
                              "after the first.", m, buckets=PER_TOKEN, registry=r)
        self.prompt_tokens = Counter("genforge:prompt_tokens", "Prompt tokens processed.", m, registry=r)
        self.generation_tokens = Counter("genforge:generation_tokens", "Tokens generated.", m, registry=r)
        self.images = Counter("genforge:images_generated", "Images generated.", m, registry=r)
        self.batch_size = Histogram("genforge:batch_size", "Rows per batched model call (text decode step or "
                                    "image batch).", m, buckets=BATCH, registry=r)
        self.requests = Counter("genforge:requests", "Requests answered, by model and HTTP status.",
                                ["model", "code"], registry=r)
        self.errors = Counter("genforge:request_errors", "Error responses, by model and HTTP status.",
                              ["model", "code"], registry=r)

    def watch(self, model: str, running: Callable[[], float], waiting: Callable[[], float]) -> None:
        """Read the model's running / waiting counts at scrape time."""
        self.running.labels(model=model).set_function(running)
        self.waiting.labels(model=model).set_function(waiting)

    def answered(self, model: str, status: int) -> None:
        self.requests.labels(model=model, code=str(status)).inc()
        if status >= 400:
            self.errors.labels(model=model, code=str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Tracker:
    """Latency metrics of one request: queue time, time to first token, time per output token, tokens."""

    def __init__(self, metrics: Metrics, model: str, arrived: float, jobs: list) -> None:
        self.metrics, self.model, self.arrived, self.jobs = metrics, model, arrived, jobs
        self.first: float | None = None
        self.last: float | None = None
        self.tokens = 0
        self.prompted = False

    def saw(self, event: Any) -> None:
        if isinstance(event, Tokens):
            now = time.perf_counter()
            if self.first is None:
                self.first = now
                self.metrics.ttft.labels(model=self.model).observe(now - self.arrived)
                starts = [j.started for j in self.jobs if j.started is not None]
                if starts:
                    self.metrics.queue_time.labels(model=self.model).observe(min(starts) - self.arrived)
            self.last = now
            self.tokens += event.count
            self.metrics.generation_tokens.labels(model=self.model).inc(event.count)
        elif isinstance(event, JobDone):
            self.metrics.prompt_tokens.labels(model=self.model).inc(event.prompt_tokens)

    def finished(self, status: int) -> None:
        m = self.model
        if status == 200:
            self.metrics.latency.labels(model=m).observe(time.perf_counter() - self.arrived)
            steps = self.tokens // max(1, sum(j.request.n for j in self.jobs))
            if self.first is not None and self.last is not None and steps > 1:
                self.metrics.tpot.labels(model=m).observe((self.last - self.first) / (steps - 1))
        self.metrics.answered(m, status)
