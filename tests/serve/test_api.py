"""The HTTP API against a real uvicorn server: a real OpenAI client, streaming, images, errors, auth, metrics."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import httpx
import pytest
from PIL import Image

from genforge.serve import ServeSettings

from .conftest import running_server


def test_the_official_openai_client_lists_completes_streams_and_gets_images(server):
    openai = pytest.importorskip("openai")
    url, _ = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"tiny-gpt", "tiny-gan", "tiny-diffusion"}

    whole = client.completions.create(model="tiny-gpt", prompt="line", max_tokens=24, seed=5, temperature=0.9)
    assert whole.usage.completion_tokens == 24 and whole.usage.prompt_tokens == 4
    assert whole.choices[0].finish_reason == "length" and len(whole.choices[0].text) > 0

    chunks = list(client.completions.create(model="tiny-gpt", prompt="line", max_tokens=24, seed=5,
                                            temperature=0.9, stream=True))
    pieces = [c.choices[0].text for c in chunks if c.choices and c.choices[0].finish_reason is None]
    assert len(pieces) >= 10  # token by token, not one blob at the end
    assert "".join(pieces) == whole.choices[0].text  # the same seed streams the same text
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].usage.completion_tokens == 24

    images = client.images.generate(model="tiny-gan", prompt="3", n=3, response_format="b64_json")
    assert len(images.data) == 3
    png = Image.open(io.BytesIO(base64.b64decode(images.data[0].b64_json)))
    assert png.format == "PNG" and png.size == (8, 8)


def test_models_list_has_family_task_and_capabilities(server):
    url, _ = server
    data = httpx.get(f"{url}/v1/models").json()
    assert data["object"] == "list"
    cards = {m["id"]: m for m in data["data"]}
    assert cards["tiny-gpt"]["genforge"]["task"] == "text" and "stream" in cards["tiny-gpt"]["genforge"]["capabilities"]
    diffusion = cards["tiny-diffusion"]["genforge"]
    assert diffusion["family"] == "diffusion" and diffusion["num_classes"] == 10
    assert {"steps", "sampler", "guidance"} <= set(diffusion["sample_options"])
    assert httpx.get(f"{url}/v1/models/tiny-gan").json()["id"] == "tiny-gan"
    assert httpx.get(f"{url}/v1/models/nope").status_code == 404


def test_image_options_are_the_familys_and_a_seed_reproduces(server):
    url, _ = server
    body = {"model": "tiny-diffusion", "n": 2, "seed": 11, "steps": 4, "sampler": "ddim", "guidance": 2, "label": 7}
    a = httpx.post(f"{url}/v1/images/generations", json=body, timeout=60).json()
    b = httpx.post(f"{url}/v1/images/generations", json=body, timeout=60).json()
    assert [d["b64_json"] for d in a["data"]] == [d["b64_json"] for d in b["data"]]
    assert a["genforge"]["seed"] == 11 and a["genforge"]["label"] == 7
    assert a["genforge"]["options"] == {"sampler": "ddim", "steps": 4, "eta": 0.0, "guidance": 2.0,
                                         "negative_prompt": None}
    c = httpx.post(f"{url}/v1/images/generations", json={**body, "seed": 12}, timeout=60).json()
    assert c["data"][0]["b64_json"] != a["data"][0]["b64_json"]
    unseeded = httpx.post(f"{url}/v1/images/generations", json={"model": "tiny-gan"}, timeout=60).json()
    assert isinstance(unseeded["genforge"]["seed"], int)  # chosen by the server and returned, so it can be reproduced


BAD = [  # (path, body, status, param)
    ("/v1/completions", {"model": "nope", "prompt": "x"}, 404, "model"),
    ("/v1/completions", {"model": "tiny-gpt", "prompt": "x", "max_tokens": "5"}, 400, "max_tokens"),
    ("/v1/completions", {"model": "tiny-gpt", "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {"model": "tiny-gpt", "prompt": "x", "max_tokens": 10**9}, 400, "max_tokens"),
    ("/v1/completions", {"model": "tiny-gpt", "prompt": "x", "n": 50}, 400, "n"),
    ("/v1/completions", {"model": "tiny-gpt", "prompt": "QZ€"}, 400, "prompt"),
    ("/v1/completions", {"model": "tiny-gpt", "prompt": ""}, 400, "prompt"),
    ("/v1/completions", {"model": "tiny-gpt", "prompt": "x", "temperature": -1}, 400, "temperature"),
    ("/v1/completions", {"model": "tiny-gpt", "prompt": "x", "top_p": 1.5}, 400, "top_p"),
    ("/v1/completions", {"model": "tiny-gpt", "prompt": "x", "top_k": 0}, 400, "top_k"),
    ("/v1/completions", {"model": "tiny-gpt", "prompt": "x", "stream": "yes"}, 400, "stream"),
    ("/v1/completions", {"model": "tiny-gpt", "prompt": "x", "frobnicate": 1}, 400, "frobnicate"),
    ("/v1/completions", {"model": "tiny-gpt", "prompt": "x", "logprobs": 3}, 400, "logprobs"),
    ("/v1/completions", {"model": "tiny-gpt", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("/v1/completions", {"model": "tiny-gan", "prompt": "x"}, 400, "model"),
    ("/v1/completions", {"prompt": "x"}, 400, "model"),
    ("/v1/chat/completions", {"model": "tiny-gpt", "messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    ("/v1/images/generations", {"model": "tiny-gpt"}, 400, "model"),
    ("/v1/images/generations", {"model": "tiny-diffusion", "stepz": 3}, 400, "stepz"),
    ("/v1/images/generations", {"model": "tiny-diffusion", "nrow": 3}, 400, "nrow"),
    ("/v1/images/generations", {"model": "tiny-diffusion", "steps": 0}, 400, "steps"),
    ("/v1/images/generations", {"model": "tiny-diffusion", "steps": 5000}, 400, "steps"),
    ("/v1/images/generations", {"model": "tiny-diffusion", "sampler": "heun"}, 400, "sampler"),
    ("/v1/images/generations", {"model": "tiny-diffusion", "guidance": -1}, 400, "guidance"),
    ("/v1/images/generations", {"model": "tiny-diffusion", "label": 10}, 400, "label"),
    ("/v1/images/generations", {"model": "tiny-diffusion", "prompt": "eleven"}, 400, "prompt"),
    ("/v1/images/generations", {"model": "tiny-gan", "n": 1000}, 400, "n"),
    ("/v1/images/generations", {"model": "tiny-gan", "response_format": "url"}, 400, "response_format"),
    ("/v1/images/generations", {"model": "tiny-gan", "size": "1024x1024"}, 400, "size"),
]


@pytest.mark.parametrize("path,body,status,param", BAD, ids=[f"{p.split('/')[-1]}-{s}-{q}" for p, _, s, q in BAD])
def test_bad_requests_get_the_right_status_and_name_the_field(server, path, body, status, param):
    url, _ = server
    r = httpx.post(f"{url}{path}", json=body, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param, error
    assert error["message"] and error["type"]
    assert "\n" not in error["message"]


def test_hostile_bodies_and_routes_and_the_server_keeps_serving(server):
    url, _ = server
    huge = b'{"model": "tiny-gpt", "prompt": "' + b"a" * (10 << 20) + b'"}'
    r = httpx.post(f"{url}/v1/completions", content=huge, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["param"] == "body"
    r = httpx.post(f"{url}/v1/completions", content=b'{"model": ', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/completions", content=b"\xff\xfe", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert httpx.get(f"{url}/v1/nowhere").status_code == 404
    assert httpx.get(f"{url}/v1/completions").status_code == 405
    ok = httpx.post(f"{url}/v1/completions", json={"model": "tiny-gpt", "prompt": "line", "max_tokens": 3})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3


def test_stop_strings_echo_and_several_prompts(server):
    url, _ = server
    base = {"model": "tiny-gpt", "max_tokens": 60, "seed": 3, "temperature": 0}
    full = httpx.post(f"{url}/v1/completions", json={**base, "prompt": "line"}, timeout=30).json()["choices"][0]
    text = full["text"]
    stop = text[5:7]
    cut = httpx.post(f"{url}/v1/completions", json={**base, "prompt": "line", "stop": stop}, timeout=30).json()
    assert cut["choices"][0]["text"] == text[:text.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"
    echoed = httpx.post(f"{url}/v1/completions", json={**base, "prompt": "line", "echo": True}, timeout=30).json()
    assert echoed["choices"][0]["text"] == "line" + text
    two = httpx.post(f"{url}/v1/completions", json={**base, "prompt": ["line", "of a"], "n": 2}, timeout=30).json()
    assert [c["index"] for c in two["choices"]] == [0, 1, 2, 3]
    assert two["choices"][0]["text"] == text  # greedy: the same continuation however it is batched


def test_api_key_is_required_on_the_api_only(served_runs):
    spec = str(served_runs["tiny-gan"])
    with running_server([spec], ServeSettings(api_key="s3cret")) as (url, _):
        body = {"model": "tiny-gan"}
        assert httpx.post(f"{url}/v1/images/generations", json=body).status_code == 401
        wrong = httpx.post(f"{url}/v1/images/generations", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        ok = httpx.post(f"{url}/v1/images/generations", json=body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert httpx.get(f"{url}/healthz").status_code == 200 and httpx.get(f"{url}/readyz").status_code == 200


def test_metrics_follow_vllms_names_and_count_by_model(server):
    url, _ = server
    httpx.post(f"{url}/v1/completions", json={"model": "tiny-gpt", "prompt": "line", "max_tokens": 7}, timeout=30)
    httpx.post(f"{url}/v1/images/generations", json={"model": "tiny-gan", "n": 2}, timeout=30)
    httpx.post(f"{url}/v1/completions", json={"model": "tiny-gpt", "prompt": "x", "top_p": 9}, timeout=30)
    text = httpx.get(f"{url}/metrics").text
    for name in ("genforge:num_requests_running", "genforge:num_requests_waiting",
                 "genforge:e2e_request_latency_seconds_bucket", "genforge:request_queue_time_seconds_bucket",
                 "genforge:time_to_first_token_seconds_bucket", "genforge:time_per_output_token_seconds_bucket",
                 "genforge:prompt_tokens_total", "genforge:generation_tokens_total", "genforge:images_generated_total",
                 "genforge:batch_size_bucket", "genforge:request_errors_total"):
        assert name in text, name

    def value(prefix: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))

    assert value('genforge:generation_tokens_total{model="tiny-gpt"}') >= 7
    assert value('genforge:images_generated_total{model="tiny-gan"}') >= 2
    assert value('genforge:request_errors_total{code="400",model="tiny-gpt"}') >= 1


def test_health_answers_while_a_long_generation_runs(server):
    url, app = server
    engine = app.state.models["tiny-gpt"].engine
    done = threading.Event()

    def long_request():
        httpx.post(f"{url}/v1/completions", json={"model": "tiny-gpt", "prompt": "line", "max_tokens": 512},
                   timeout=120)
        done.set()

    threading.Thread(target=long_request, daemon=True).start()
    deadline = time.monotonic() + 30
    while not engine.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.running, "the long request never started"
    assert httpx.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
    assert not done.is_set() or engine.steps > 0
    done.wait(120)


def test_stream_format_is_server_sent_events_ending_in_done(server):
    url, _ = server
    with httpx.stream("POST", f"{url}/v1/completions", json={"model": "tiny-gpt", "prompt": "line", "max_tokens": 5,
                                                              "stream": True, "seed": 2}, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-genforge-seed"] == "2"
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(e["object"] == "text_completion" for e in events)
    assert events[-1]["choices"][0]["finish_reason"] == "length" and events[-1]["usage"]["completion_tokens"] == 5


def test_concurrent_seeded_requests_get_what_they_get_alone(server):
    url, app = server
    bodies = [{"model": "tiny-gpt", "prompt": p, "max_tokens": 40, "seed": s, "temperature": t, "top_k": k}
              for p, s, t, k in (("line", 1, 1.0, None), ("of a", 2, 0.7, 5), ("small", 3, 1.3, None), ("l", 4, 0, 1))]
    alone = [httpx.post(f"{url}/v1/completions", json=b, timeout=60).json()["choices"][0]["text"] for b in bodies]
    together: dict[int, str] = {}
    steps_before = app.state.models["tiny-gpt"].engine.steps

    def send(i: int) -> None:
        together[i] = httpx.post(f"{url}/v1/completions", json=bodies[i], timeout=60).json()["choices"][0]["text"]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [together[i] for i in range(len(bodies))] == alone
    # they shared decode steps: fewer batched steps than 4 requests x 39 steps one after another
    assert app.state.models["tiny-gpt"].engine.steps - steps_before < 4 * 39
