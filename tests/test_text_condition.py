"""A family that takes a *text* condition, defined here and nowhere else, goes through ``genforge train``,
``genforge sample --prompt``, ``eval`` and ``POST /v1/images/generations`` with a free-text prompt.

The toy keys per-pixel Bernoulli logits by a hash of the prompt's words (lower-cased, sorted): it trains on
a labelled image set with each image's class name as its prompt, so "3", "  3 " and "THREE"-free variants
of the same words land in the same bucket, and a prompt is encoded by the model's own (hashing) encoder.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import Tensor, nn

from genforge import models
from genforge.models import rng
from genforge.cli import main
from genforge.models.base import Batch, GenerativeModel, ImageModelConfig, unpack_image_batch
from genforge.models.capabilities import ImageModel
from genforge.models.conditions import Condition

FAMILY = "toy-prompted"


@dataclass(kw_only=True)
class PromptedConfig(ImageModelConfig):
    family: str = FAMILY
    buckets: int = 64


class PromptedPixels(GenerativeModel, ImageModel):
    """p(x | prompt) = prod over pixels of Bernoulli(sigmoid(logit[bucket(prompt)])); trained on class names."""

    config_class: ClassVar[type[PromptedConfig]] = PromptedConfig
    family: ClassVar[str] = FAMILY

    def __init__(self, config: PromptedConfig) -> None:
        super().__init__(config)
        config.check_complete()
        self.logits = nn.Parameter(torch.zeros(config.buckets, *self.image_shape))  # [buckets, C, S, S]

    def accepted_conditions(self) -> tuple[str, ...]:
        return ("text",)

    def encode(self, prompts: tuple[str, ...]) -> Tensor:
        """The model's own text encoder: prompts → bucket ids int64 [n] (crc32 of the sorted lower-case words)."""
        keys = [" ".join(sorted(p.lower().split())) for p in prompts]
        return torch.tensor([zlib.crc32(k.encode()) % self.config.buckets for k in keys], dtype=torch.long)

    def losses(self, batch: Batch, *, groups: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        x, y = unpack_image_batch(batch, self.config, self.device, FAMILY)
        buckets = self.encode(tuple(self.class_names[i] for i in y.tolist()))
        return {"loss": F.binary_cross_entropy_with_logits(self.logits[buckets], x)}

    @torch.no_grad()
    def sample(self, n: int, *, condition: Any = None, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        self.parse_sample_options(options)
        if isinstance(condition, Condition) and condition.text is not None:
            prompts = condition.text
        elif condition is None:  # no prompt: the class names seen in training, at random
            pick = rng.randint(len(self.class_names), (n,), generator)  # a RowGenerators when batched
            prompts = tuple(self.class_names[i] for i in pick.tolist())
        else:
            raise ValueError(f"the {FAMILY} toy takes a text condition, got {condition!r}")
        p = torch.sigmoid(self.logits[self.encode(prompts)])  # [n, C, S, S]
        return (rng.rand(tuple(p.shape), generator) < p).float()


@pytest.fixture
def toy_family(monkeypatch):
    monkeypatch.setitem(models.FAMILIES, FAMILY, PromptedPixels)


@pytest.fixture
def run(toy_family, tmp_path):
    recipe = {"description": "per-pixel Bernoulli keyed by a hash of the prompt's words, on digits",
              "data": {"name": "digits"}, "model": {"family": FAMILY, "conditional": True},
              "train": {"max_steps": 60, "batch_size": 64, "lr": 0.2, "ema_decay": 0.0, "log_every": 20,
                        "sample_every": 30, "checkpoint_every": 30, "num_threads": 1},
              "sample": {"n": 8, "prompt": "7"}}
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    out = tmp_path / "toy"
    assert main(["train", "--config", str(tmp_path / "toy.yaml"), "--out", str(out), "--no-progress"]) == 0
    return out


def test_a_text_conditioned_family_trains_samples_from_a_prompt_and_evaluates(run, tmp_path, capsys):
    assert Image.open(run / "samples.png").text["prompt"] == "7"  # the recipe's prompt drew the training grids
    model = models.load(run)
    assert model.accepted_conditions() == ("text",)
    sevens, ones = tmp_path / "sevens.png", tmp_path / "ones.png"
    assert main(["sample", str(run), "--prompt", "7", "--n", "16", "--seed", "1", "-o", str(sevens)]) == 0
    assert main(["sample", str(run), "--prompt", "  1 ", "--n", "16", "--seed", "1", "-o", str(ones)]) == 0
    meta = Image.open(sevens).text
    assert meta["genforge_model"] == FAMILY and meta["prompt"] == "7"
    # the prompt decides the picture: the mean of "7" samples is the learned "7" template, not the "1" one
    learned = torch.sigmoid(model.logits.detach()[model.encode(("7", "1"))])  # [2, 1, 8, 8]
    x7 = model.sample(400, condition=Condition(text=("7",) * 400), generator=torch.Generator().manual_seed(0))
    assert float((x7.mean(0) - learned[0]).abs().mean()) < 0.06
    assert float((learned[0] - learned[1]).abs().mean()) > 0.15
    assert sevens.read_bytes() != ones.read_bytes()
    code = main(["sample", str(run), "--label", "7", "-o", str(tmp_path / "label.png")])
    err = capsys.readouterr().err
    assert code == 2 and "does not take a class label (label); it takes a text prompt (--prompt)" in err
    assert main(["eval", str(run), "--metrics", "fid", "--n", "200", "--allow-small", "--no-progress"]) == 0
    capsys.readouterr()


def test_the_http_api_draws_from_a_free_text_prompt(run):
    pytest.importorskip("fastapi")
    import base64
    import io

    from fastapi.testclient import TestClient

    from genforge.serve import ServeSettings, check_specs, create_app

    app = create_app(check_specs([f"toy={run}"]), ServeSettings(), load_async=False)
    with TestClient(app) as client:
        got = {}
        for prompt in ("7", "1"):
            r = client.post("/v1/images/generations", json={"model": "toy", "prompt": prompt, "n": 3, "seed": 5})
            assert r.status_code == 200, r.text
            images = [Image.open(io.BytesIO(base64.b64decode(d["b64_json"]))) for d in r.json()["data"]]
            assert len(images) == 3 and images[0].size == (8, 8)
            got[prompt] = r.json()["data"][0]["b64_json"]
        assert got["7"] != got["1"]
        r = client.post("/v1/images/generations", json={"model": "toy", "prompt": "7", "n": 3, "seed": 5})
        assert r.json()["data"][0]["b64_json"] == got["7"]  # seeded
        r = client.post("/v1/images/generations", json={"model": "toy", "prompt": "7", "label": 3, "n": 1})
        assert r.status_code == 400 and r.json()["error"]["param"] == "label"
