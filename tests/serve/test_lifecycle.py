"""Cancellation on disconnect, the queue limit, readiness, start-up errors and ``genforge serve --help``."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import pytest

from genforge.cli import main
from genforge.serve import ServeSettings, check_specs, create_app
from genforge.serve.registry import ServedModel

from .conftest import running_server


def _generated(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('genforge:generation_tokens_total{model="tiny-gpt"}'))


def test_a_client_that_disconnects_stops_its_generation(served_runs):
    with running_server([str(served_runs["tiny-gpt"])], ServeSettings(max_tokens=100_000)) as (url, app):
        engine = app.state.models["tiny-gpt"].engine
        before = _generated(url)
        with httpx.stream("POST", f"{url}/v1/completions", timeout=30,
                          json={"model": "tiny-gpt", "prompt": "line", "max_tokens": 100_000, "stream": True}) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(20)]  # tokens are flowing
        assert any(line.startswith("data: ") for line in got)
        deadline = time.monotonic() + 10
        while engine.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not engine.running, "the generation went on after the client left"
        stopped = _generated(url)
        time.sleep(0.5)
        assert _generated(url) == stopped  # the generation-tokens counter stopped rising
        assert before < stopped < before + 100_000

        # a non-streaming request whose client gives up is cancelled too
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/completions", json={"model": "tiny-gpt", "prompt": "line", "max_tokens": 100_000},
                       timeout=1.0)
        deadline = time.monotonic() + 10
        while engine.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not engine.running


def test_a_full_queue_answers_429_with_retry_after(served_runs):
    settings = ServeSettings(max_batch=1, max_n=1, max_queue=1, max_tokens=100_000)
    with running_server([str(served_runs["tiny-gpt"])], settings) as (url, app):
        engine = app.state.models["tiny-gpt"].engine
        body = {"model": "tiny-gpt", "prompt": "line", "max_tokens": 100_000}
        def hold_a_slot() -> None:  # gives up after 5 s: its request is then cancelled by the server
            try:
                httpx.post(f"{url}/v1/completions", json=body, timeout=5)
            except httpx.HTTPError:
                pass

        clients = [threading.Thread(target=hold_a_slot, daemon=True) for _ in range(2)]
        clients[0].start()
        while not engine.running:
            time.sleep(0.01)
        clients[1].start()
        while not engine.waiting:
            time.sleep(0.01)
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=5)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["type"] == "rate_limit_error"
        for c in clients:
            c.join(10)


def test_readyz_is_503_until_the_models_are_loaded(served_runs, monkeypatch):
    from fastapi.testclient import TestClient

    release = threading.Event()
    real_load = ServedModel.load

    def slow_load(self, *args, **kwargs):
        release.wait(30)
        real_load(self, *args, **kwargs)

    monkeypatch.setattr(ServedModel, "load", slow_load)
    app = create_app(check_specs([str(served_runs["tiny-gan"])]), ServeSettings())
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        r = client.post("/v1/images/generations", json={"model": "tiny-gan"})
        assert r.status_code == 503 and "loading" in r.json()["error"]["message"]
        release.set()
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.post("/v1/images/generations", json={"model": "tiny-gan"}).status_code == 200


def test_bad_run_directories_fail_start_up_with_one_line(served_runs, tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing" in err and "\n" not in err
    gpt = str(served_runs["tiny-gpt"])
    assert main(["serve", gpt, gpt]) == 2
    assert "two models are named 'tiny-gpt'" in capsys.readouterr().err
    assert main(["serve", "bad name!=" + gpt]) == 2
    assert "model name" in capsys.readouterr().err
    for flags, says in ((["--max-n", "0"], "--max-n: must be >= 1"), (["--port", "70000"], "--port: must be in")):
        with pytest.raises(SystemExit) as exit_:
            main(["serve", gpt, *flags])
        assert exit_.value.code == 2 and says in capsys.readouterr().err
    assert main(["serve", gpt, "--timeout", "-1"]) == 2
    assert "--timeout must be in [0, 86400], got -1" in capsys.readouterr().err


def test_serve_help_documents_every_flag():
    out = subprocess.run([sys.executable, "-m", "genforge.cli", "serve", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for flag in ("--host", "--port", "--api-key", "GENFORGE_API_KEY", "--max-batch", "--max-queue", "--timeout",
                 "--max-tokens", "--max-n", "--max-images", "--max-prompt-chars", "--max-body-bytes", "--max-steps",
                 "--batch-window", "--stream-buffer", "--write-timeout", "--log-level", "NAME=RUN"):
        assert flag in out, flag


def test_the_cli_server_shuts_down_cleanly_on_sigterm(served_runs):
    import signal

    from .conftest import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "genforge.cli", "serve", str(served_runs["tiny-gpt"]), "--port",
                             str(port), "--max-tokens", "100000", "--timeout", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        result = {}

        def long_request():
            try:
                result["r"] = httpx.post(f"{url}/v1/completions", timeout=30,
                                         json={"model": "tiny-gpt", "prompt": "line", "max_tokens": 100_000})
            except httpx.HTTPError as e:
                result["e"] = e

        t = threading.Thread(target=long_request)
        t.start()
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its graceful shutdown
        t.join(30)
        assert "r" in result or "e" in result  # the in-flight request was answered or its connection closed
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stdout.read()
    assert "Shutting down" in log and "Finished server process" in log and "Traceback" not in log
