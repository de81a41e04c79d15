"""Proof that a model family is one class and one registry entry: a toy family defined here, and nowhere else,
goes through ``genforge train``, ``sample``, ``eval`` (FID, NLL) and ``compare`` by the public entry points.

The toy is independent per-pixel Bernoulli with one learned logit per pixel and class: grey levels are soft
targets, so log p(x | y) = -BCE-with-logits summed over pixels, exactly (the family declares it ``exact``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import Tensor, nn

from genforge import models
from genforge.cli import main
from genforge.config import DataConfig
from genforge.data import load_images
from genforge.models.base import (Batch, GenerativeModel, ImageModelConfig, Likelihood, labels_for,
                                  unpack_image_batch)
from genforge.models.capabilities import ImageModel

FAMILY = "toy-bernoulli"


@dataclass(kw_only=True)
class ToyConfig(ImageModelConfig):
    family: str = FAMILY


class ToyBernoulli(GenerativeModel, ImageModel):
    """p(x | y) = prod over pixels of Bernoulli(sigmoid(logit[y, c, i, j])): a learned logit per pixel and class."""

    config_class: ClassVar[type[ToyConfig]] = ToyConfig
    family: ClassVar[str] = FAMILY

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        config.check_complete()
        self.logits = nn.Parameter(torch.zeros(max(1, self.num_classes), *self.image_shape))  # [K, C, S, S]

    def _logits(self, y: Tensor | None, n: int) -> Tensor:
        return self.logits[y] if y is not None else self.logits[0].expand(n, *self.image_shape)  # [n, C, S, S]

    def _log_px(self, batch: Batch) -> Tensor:
        x, y = unpack_image_batch(batch, self.config, self.device, FAMILY)  # [B, C, S, S] in [0, 1]
        logits = self._logits(y, x.shape[0])
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)  # [B]

    def losses(self, batch: Batch, *, groups: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        return {"loss": -self._log_px(batch).mean()}

    def describe_likelihood(self, **options: Any) -> Likelihood:
        return Likelihood(kind="exact", estimate="exact per-pixel Bernoulli log p(x | y), grey levels as soft targets")

    def log_likelihood(self, batch: Batch, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        with torch.no_grad():
            return self._log_px(batch)

    @torch.no_grad()
    def sample(self, n: int, *, condition: Any = None, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        self.parse_sample_options(options)
        y = labels_for(n, condition, self.num_classes, self.device, generator)
        p = torch.sigmoid(self._logits(y, n))
        return (torch.rand(p.shape, generator=generator).to(self.device) < p).float()


@pytest.fixture
def toy_family(monkeypatch):
    monkeypatch.setitem(models.FAMILIES, FAMILY, ToyBernoulli)
    return ToyBernoulli


def _recipe(path, **train):
    recipe = {"description": "toy per-pixel Bernoulli on digits", "data": {"name": "digits"},
              "model": {"family": FAMILY, "conditional": True},
              "train": {"max_steps": 40, "batch_size": 64, "lr": 0.1, "ema_decay": 0.0, "log_every": 10,
                        "sample_every": 20, "checkpoint_every": 20, "num_threads": 1, **train},
              "sample": {"n": 20}}
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def test_a_family_defined_in_a_test_trains_samples_evaluates_and_compares(toy_family, tmp_path, capsys):
    run = tmp_path / "toy"
    assert main(["train", "--config", str(_recipe(tmp_path / "toy.yaml")), "--out", str(run), "--no-progress"]) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["task"] == "image" and cfg["model"]["family"] == FAMILY and cfg["model"]["num_classes"] == 10
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-00000020.png", "step-00000040.png"]

    png = tmp_path / "threes.png"
    assert main(["sample", str(run), "--n", "10", "--label", "3", "--seed", "1", "-o", str(png)]) == 0
    meta = Image.open(png).text
    assert meta["genforge_model"] == FAMILY and meta["label"] == "3" and meta["n"] == "10"

    assert main(["eval", str(run), "--metrics", "fid,nll", "--n", "200", "--allow-small", "--no-progress"]) == 0
    record = json.loads((run / "eval.json").read_text())
    got = {r["metric"]: r for r in record["results"]}
    assert set(got) == {"fid", "nll", "bits_per_dim"}
    assert got["fid"]["value"] > 0
    assert got["nll"]["protocol"]["params"]["estimate"].startswith("exact per-pixel Bernoulli")

    # The NLL of an exact likelihood is the closed form: mean over the reference images of the summed BCE.
    data = load_images(DataConfig(name="digits"))
    model = models.load(run)
    logits = model.logits.detach()[data.test_y]  # [N, 1, 8, 8]
    expected = F.binary_cross_entropy_with_logits(logits, data.test_x.float() / 255, reduction="none")
    assert got["nll"]["protocol"]["n_reference"] == data.test_x.shape[0]
    assert got["nll"]["value"] == pytest.approx(float(expected.flatten(1).sum(1).double().mean()), rel=1e-6)
    assert got["bits_per_dim"]["value"] == pytest.approx(got["nll"]["value"] / (64 * 0.6931471805599453), rel=1e-9)

    other = tmp_path / "toy-b"
    assert main(["train", "--config", str(_recipe(tmp_path / "b.yaml", max_steps=10)), "--out", str(other),
                 "--no-progress"]) == 0
    assert main(["eval", str(other), "--metrics", "fid,nll", "--n", "200", "--allow-small", "--no-progress"]) == 0
    board = tmp_path / "board"
    assert main(["compare", str(run), str(other), "--out", str(board)]) == 0
    md = (board / "leaderboard.md").read_text()
    assert FAMILY in md and "FID" in md and "(#1)" in md and "(#2)" in md
    capsys.readouterr()


def test_the_toy_family_declares_what_it_can_do(toy_family):
    model = ToyBernoulli(ToyConfig(channels=1, image_size=8, conditional=True, num_classes=10))
    assert model.capabilities() == ("sample", "conditional", "likelihood:exact")
    assert model.task == "image"
