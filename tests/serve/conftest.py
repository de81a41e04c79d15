"""Tiny trained runs and a real uvicorn server on 127.0.0.1 (a free port) that stops after the tests."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

import uvicorn  # noqa: E402

from genforge.cli import main  # noqa: E402
from genforge.serve import ServeSettings, check_specs, create_app  # noqa: E402

FAST = ["--no-progress", "--set", "train.num_threads=1", "--set", "train.checkpoint_every=1000",
        "--set", "train.sample_every=1000"]


@pytest.fixture(scope="session")
def served_runs(tmp_path_factory) -> dict[str, Path]:
    """tiny-gpt (a char model of a small corpus), tiny-gan and tiny-diffusion, trained a few steps."""
    root = tmp_path_factory.mktemp("serve-runs")
    corpus = root / "corpus.txt"
    corpus.write_text("".join(f"line {i % 17} of a small corpus, with words.\n" for i in range(400)), encoding="utf-8")
    runs = {name: root / name for name in ("tiny-gpt", "tiny-gan", "tiny-diffusion")}
    assert main(["train", "tiny-gpt", "--out", str(runs["tiny-gpt"]), "--set", f"data.name=text:{corpus}",
                 "--set", "train.max_steps=40", "--set", "train.eval_every=1000", *FAST]) == 0
    for name in ("tiny-gan", "tiny-diffusion"):
        assert main(["train", name, "--out", str(runs[name]), "--set", "train.max_steps=4", *FAST]) == 0
    return runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(specs: list[str], settings: ServeSettings | None = None):
    """Serve ``specs`` on 127.0.0.1 in a thread; yields (base URL, app) once /readyz is 200; stops on exit."""
    import httpx

    app = create_app(check_specs(specs), settings or ServeSettings())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the test server did not become ready in 60 s")
            time.sleep(0.05)
        yield url, app
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def server(served_runs):
    """One server for a module: the three tiny runs, default limits but a small max_tokens bound for tests."""
    specs = [str(p) for p in served_runs.values()]
    with running_server(specs, ServeSettings(max_tokens=512, max_n=4, max_batch=8)) as (url, app):
        yield url, app
