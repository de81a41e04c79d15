"""Prometheus metrics of ``genforge serve``, named after vLLM's where one applies (``vllm:`` → ``genforge:``).

One :class:`Metrics` per app, on its own registry (several apps can live in one process, as in tests).
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
