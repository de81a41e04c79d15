"""Issue 24, finding 5: a model that cannot load stops start-up; what the CLI refuses is a 4xx naming the field;
server options are bounded; slow readers are bounded and timed out; what the key protects; offline docs."""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from genforge.cli import main
from genforge.serve import ServeSettings, check_specs, create_app

from .conftest import free_port


def test_a_model_that_cannot_load_stops_start_up_with_one_line_naming_it(served_runs, tmp_path, capsys):
    broken = shutil.copytree(served_runs["tiny-gan"], tmp_path / "gan")
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    argv = ["serve", str(served_runs["tiny-gpt"]), f"broken={broken}", "--port", str(free_port()),
            "--log-level", "critical"]
    started = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - started < 60
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genforge serve: error: cannot load model 'broken'"), err
    from fastapi.testclient import TestClient

    app = create_app(check_specs([f"broken={broken}"]), ServeSettings(), load_async=False)
    with TestClient(app) as client:  # embedded without the CLI: unhealthy and not ready, naming the model
        for path in ("/healthz", "/readyz"):
            r = client.get(path)
            assert r.status_code == 503 and "'broken'" in r.json()["error"]["message"]


@pytest.fixture(scope="module")
def client(served_runs):
    from fastapi.testclient import TestClient

    models = check_specs([str(served_runs[n]) for n in ("tiny-gpt", "tiny-gan", "tiny-diffusion")])
    with TestClient(create_app(models, ServeSettings(api_key="k3y-ASCII"), load_async=False)) as c:
        c.headers["Authorization"] = "Bearer k3y-ASCII"
        yield c


REFUSED = [  # options the model refuses only when it builds its sampler: the error carries its field
    ({"steps": 100}, "steps"),                              # over dpm++'s range on a 100-timestep schedule
    ({"sampler": "ddpm", "steps": 100, "eta": 0.5}, "eta"),  # eta is ddim's alone
    ({"eta": 0.5}, "eta"),
    ({"steps": 100, "eta": 0.5}, "eta"),                    # two bad options: the first the sampler checks
    ({"sampler": "euler"}, "sampler"),                      # a flow sampler on a DDPM model
    ({"sampler": "euler", "eta": 0.5}, "sampler"),
]


@pytest.mark.parametrize("options,param", REFUSED, ids=[p + str(i) for i, (_, p) in enumerate(REFUSED)])
def test_what_sampling_would_refuse_is_a_400_naming_the_field(client, options, param):
    r = client.post("/v1/images/generations", json={"model": "tiny-diffusion", **options})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.json()
    r = client.post("/v1/images/generations", json={"model": "tiny-gan", "guidance": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "guidance"


def test_server_options_are_bounded_at_start_up(served_runs, capsys):
    gpt = str(served_runs["tiny-gpt"])
    for flags, says in ((["--max-tokens", str(10**12)], "--max-tokens must be in [1, 10000000], got 1000000000000"),
                        (["--max-queue", "-1"], "--max-queue must be in [0, 100000]"),
                        (["--max-body-bytes", str(1 << 40)], "--max-body-bytes must be in"),
                        (["--timeout", "1e9"], "--timeout must be in [0, 86400]"),
                        (["--write-timeout", "0"], "--write-timeout must be in"),
                        (["--api-key", "clé"], "visible ASCII"), (["--api-key", "two words"], "visible ASCII")):
        assert main(["serve", gpt, *flags]) == 2, flags
        err = capsys.readouterr().err.strip()
        assert says in err and "\n" not in err, err


def test_the_key_protects_all_but_the_page_and_health_and_docs_are_offline(client):
    bare = {"Authorization": ""}
    for path in ("/v1/models", "/openapi.json", "/metrics", "/docs"):
        r = client.get(path, headers=bare)
        assert r.status_code == 401 and r.json()["error"]["param"] == "authorization", path
    latin = client.get("/v1/models", headers={"Authorization": "Bearer cl\xe9".encode("latin-1")})
    assert latin.status_code == 401  # a key no client could send is refused at start-up; a header like it is a 401
    for path in ("/", "/healthz", "/readyz"):
        assert client.get(path, headers=bare).status_code == 200, path
    assert client.get("/openapi.json").json()["paths"]["/v1/completions"]
    assert client.get("/metrics").status_code == 200
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN: off, /openapi.json stays
    page = client.get("/").text
    assert not re.findall(r"(?:https?:)?//[\w.-]+\.\w+", page) and "<link" not in page


@pytest.mark.parametrize("stream_buffer,write_timeout", [(64, 3600), (1_000_000, 1.0)],
                         ids=["the-buffer-bound-cancels", "the-write-timeout-closes"])
def test_a_client_that_never_reads_its_stream_is_bounded_and_timed_out(served_runs, stream_buffer, write_timeout):
    settings = ServeSettings(max_tokens=100_000, stream_buffer=stream_buffer, write_timeout=write_timeout)
    app = create_app(check_specs([str(served_runs["tiny-gpt"])]), settings)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # accepted sockets inherit it (Linux)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    reader = socket.socket()
    try:
        deadline = time.monotonic() + 60
        while not server.started or httpx.get(f"{url}/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        engine = app.state.models["tiny-gpt"].engine
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.connect(("127.0.0.1", port))
        body = b'{"model": "tiny-gpt", "prompt": "line", "max_tokens": 100000, "stream": true}'
        reader.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # ... and never reads
        deadline = time.monotonic() + 10
        while not engine.running and time.monotonic() < deadline:
            time.sleep(0.01)
        deadline = time.monotonic() + 30
        while engine.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not engine.running, "the generation of a client that never reads went on"
        assert httpx.get(f"{url}/healthz").status_code == 200  # the server keeps serving
        ok = httpx.post(f"{url}/v1/completions", json={"model": "tiny-gpt", "prompt": "line", "max_tokens": 3})
        assert ok.status_code == 200
    finally:
        reader.close()
        server.should_exit = True
        thread.join(15)
