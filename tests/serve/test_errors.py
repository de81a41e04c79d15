"""An error's ``param`` is the field the error carries as data, never a guess from its message; a request is
validated once, before any of its jobs is queued."""

from __future__ import annotations

import httpx
import pytest

from genforge.config import ConfigError, FieldError
from genforge.models.capabilities import LanguageModelOptions
from genforge.sampling.options import parse_options
from genforge.sampling.text import TextRequest
from genforge.serve import ServeSettings, check_specs, create_app
from genforge.serve.errors import invalid


def _error(raw: dict) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        parse_options(TextRequest, LanguageModelOptions, raw)
    return e.value


@pytest.mark.parametrize("raw,param", [({"temperature": -1}, "temperature"), ({"top_p": 2.0}, "top_p"),
                                       ({"top_k": 0}, "top_k"), ({"max_new_tokens": 2_000_000}, "max_tokens"),
                                       ({"max_new_tokens": "5"}, "max_tokens"), ({"n": 0}, "n")])
def test_param_is_the_field_of_the_options_error_under_its_request_name(raw, param):
    e = _error(raw)
    error = invalid(e)
    assert error.status == 400 and error.param == param
    assert "sample." not in error.message and "max_new_tokens" not in error.message
    assert param in error.message


def test_param_comes_from_the_error_not_its_message():
    assert invalid(FieldError("top_p", "must be in (0, 1]")).param == "top_p"
    assert invalid(ConfigError("anything at all", key="sample.steps")).param == "steps"
    mentions = ValueError("temperature and top_p and max_new_tokens are all named here")
    assert invalid(mentions).param is None  # no field as data: no param, whatever the text says
    assert invalid(mentions, default="prompt").param == "prompt"  # the one field the step checks
    assert invalid(ConfigError("stepz is unknown", key=None)).param is None


@pytest.fixture(scope="module")
def big_tokens_client(served_runs):
    """A server whose max_tokens limit is above the model options' own bound, so that bound answers."""
    from fastapi.testclient import TestClient

    models = check_specs([str(served_runs["tiny-gpt"]), str(served_runs["tiny-diffusion"])])
    with TestClient(create_app(models, ServeSettings(max_tokens=10**7), load_async=False)) as client:
        yield client


def test_the_models_own_bounds_name_the_request_field(big_tokens_client):
    r = big_tokens_client.post("/v1/completions", json={"model": "tiny-gpt", "prompt": "line", "max_tokens": 5_000_000})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "max_tokens", error
    assert "max_tokens" in error["message"] and "max_new_tokens" not in error["message"]
    r = big_tokens_client.post("/v1/images/generations", json={"model": "tiny-diffusion", "steps": 999})
    assert r.status_code == 400 and r.json()["error"]["param"] == "steps", r.text  # over its training timesteps
    r = big_tokens_client.post("/v1/images/generations", json={"model": "tiny-diffusion", "stepz": 3})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "stepz" and "did you mean 'steps'?" in error["message"]


def test_a_bad_prompt_among_several_queues_nothing_and_each_prompt_is_parsed_once(server, monkeypatch):
    url, app = server
    model = app.state.models["tiny-gpt"]
    submitted, parsed = [], []
    real_submit, real_parse = model.engine.submit, model.pipe.parse
    monkeypatch.setattr(model.engine, "submit", lambda *a, **k: submitted.append(a) or real_submit(*a, **k))
    monkeypatch.setattr(model.pipe, "parse", lambda raw: parsed.append(raw) or real_parse(raw))
    r = httpx.post(f"{url}/v1/completions", json={"model": "tiny-gpt", "prompt": ["line", ""]}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    assert submitted == []  # the good first prompt was not queued
    parsed.clear()
    r = httpx.post(f"{url}/v1/completions", json={"model": "tiny-gpt", "prompt": ["line", "of a"], "max_tokens": 2},
                   timeout=30)
    assert r.status_code == 200 and len(r.json()["choices"]) == 2
    assert [p["prompt"] for p in parsed] == ["line", "of a"] and len(submitted) == 2


def test_the_cost_a_request_asks_for_is_declared_by_its_options():
    from genforge.models.base import SampleOptions
    from genforge.models.diffusion import DiffusionSampleOptions
    from genforge.models.superres import SuperResSampleOptions

    assert DiffusionSampleOptions(steps=7).model_evaluations() == 7
    assert SuperResSampleOptions(steps=9).model_evaluations() == 9
    assert SampleOptions().model_evaluations() is None and LanguageModelOptions().model_evaluations() is None


@pytest.mark.parametrize("accepted,body,fields,sources", [
    (("label",), {"prompt": "3"}, {"label": "3"}, {"label": "prompt"}),  # a class name: errors name the prompt
    (("label",), {"prompt": "3", "label": 4}, {"label": 4}, {}),  # label wins, as before
    (("text",), {"prompt": "a cat"}, {"prompt": "a cat"}, {}),  # a model that takes text gets its prompt
    ((), {"prompt": "a cat"}, {"prompt": "a cat"}, {}),  # pipe.parse refuses it, naming prompt
    ((), {"prompt": ""}, {}, {}),  # OpenAI's client always sends a prompt: "" is none
])
def test_the_image_prompt_becomes_a_condition_in_one_place(accepted, body, fields, sources):
    from types import SimpleNamespace

    from genforge.serve.routes.images import condition_fields
    from genforge.serve.schemas import ImageGenerationRequest

    model = SimpleNamespace(pipe=SimpleNamespace(model=SimpleNamespace(accepted_conditions=lambda: accepted)))
    request = ImageGenerationRequest(model="m", **body)
    assert condition_fields(request, model) == (fields, sources)
