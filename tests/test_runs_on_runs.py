"""Runs built on runs, with two toy families defined here and nowhere else: a linear autoencoder (the parent
run) and a diagonal Gaussian over its latents (the child, naming the parent in its recipe's ``parents:``).

Both train through ``genforge train``; the child samples, evaluates, exports (the folder holds the whole
chain), serves and compares. Then one byte of the parent's weights changes, and every command refuses the
child in one line naming the parent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from genforge import models
from genforge.cli import main
from genforge.models import rng
from genforge.models.base import Batch, GenerativeModel, ImageModelConfig, unpack_image_batch
from genforge.models.capabilities import ImageModel
from genforge.rundir import RunDir


@dataclass(kw_only=True)
class AEConfig(ImageModelConfig):
    family: str = "toy-linear-ae"
    latent: int = 6


class LinearAE(GenerativeModel, ImageModel):
    """x ≈ decode(encode(x)) with two linear maps; pixels in [0, 1], flattened."""

    config_class: ClassVar[type[AEConfig]] = AEConfig
    family: ClassVar[str] = "toy-linear-ae"

    def __init__(self, config: AEConfig) -> None:
        super().__init__(config)
        config.check_complete()
        d = config.channels * config.image_size ** 2
        self.enc, self.dec = nn.Linear(d, config.latent), nn.Linear(config.latent, d)

    def encode(self, x: Tensor) -> Tensor:  # [B, C, S, S] in [0, 1] → [B, L]
        return self.enc(x.flatten(1))

    def decode(self, z: Tensor) -> Tensor:  # [B, L] → [B, C, S, S] in [0, 1]
        return self.dec(z).clamp(0, 1).view(-1, *self.image_shape)

    def losses(self, batch: Batch, *, groups: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        x, _ = unpack_image_batch(batch, self.config, self.device, self.family)
        return {"loss": F.mse_loss(self.dec(self.enc(x.flatten(1))), x.flatten(1))}

    @torch.no_grad()
    def sample(self, n: int, *, condition: Any = None, generator: Any = None, **options: Any) -> Tensor:
        self.parse_sample_options(options)
        return self.decode(rng.randn((n, self.config.latent), generator))


@dataclass(kw_only=True)
class LatentConfig(ImageModelConfig):
    family: str = "toy-latent-gauss"
    latent: int = 6  # must match the autoencoder's


class LatentGauss(GenerativeModel, ImageModel):
    """A diagonal Gaussian fitted to the latents of the ``autoencoder`` run it stands on."""

    config_class: ClassVar[type[LatentConfig]] = LatentConfig
    family: ClassVar[str] = "toy-latent-gauss"
    parent_roles: ClassVar[tuple[str, ...]] = ("autoencoder",)

    def __init__(self, config: LatentConfig) -> None:
        super().__init__(config)
        config.check_complete()
        self.mean = nn.Parameter(torch.zeros(config.latent))
        self.log_std = nn.Parameter(torch.zeros(config.latent))

    def attach_parents(self, parents: dict[str, GenerativeModel]) -> None:
        super().attach_parents(parents)
        if parents["autoencoder"].config.latent != self.config.latent:
            raise ValueError("model.latent must match the autoencoder's")

    def losses(self, batch: Batch, *, groups: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        x, _ = unpack_image_batch(batch, self.config, self.device, self.family)
        with torch.no_grad():
            z = self.parents["autoencoder"].encode(x)  # [B, L]
        nll = 0.5 * ((z - self.mean) / self.log_std.exp()) ** 2 + self.log_std
        return {"loss": nll.sum(1).mean()}

    @torch.no_grad()
    def sample(self, n: int, *, condition: Any = None, generator: Any = None, **options: Any) -> Tensor:
        self.parse_sample_options(options)
        z = self.mean + self.log_std.exp() * rng.randn((n, self.config.latent), generator).to(self.device)
        return self.parents["autoencoder"].decode(z)


@pytest.fixture
def families(monkeypatch):
    monkeypatch.setitem(models.FAMILIES, "toy-linear-ae", LinearAE)
    monkeypatch.setitem(models.FAMILIES, "toy-latent-gauss", LatentGauss)


TRAIN = {"batch_size": 64, "ema_decay": 0.0, "log_every": 20, "sample_every": 40, "checkpoint_every": 40,
         "num_threads": 1}


def _train(tmp_path, name: str, family: str, steps: int, lr: float, parents: dict | None = None):
    recipe = {"description": f"toy {family} on digits", "data": {"name": "digits"}, "model": {"family": family},
              "train": {**TRAIN, "max_steps": steps, "lr": lr}, "sample": {"n": 16},
              **({"parents": parents} if parents else {})}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    out = tmp_path / name
    assert main(["train", "--config", str(tmp_path / f"{name}.yaml"), "--out", str(out), "--no-progress"]) == 0
    return out


def _fails_naming_the_parent(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "'autoencoder'" in err and "weights changed" in err, err
    return err


def test_a_two_stage_chain_trains_samples_evaluates_exports_serves_and_refuses_a_changed_parent(
        families, tmp_path, capsys):
    ae = _train(tmp_path, "ae", "toy-linear-ae", 80, 0.02)
    child = _train(tmp_path, "child", "toy-latent-gauss", 80, 0.05, parents={"autoencoder": str(ae)})
    raw = yaml.safe_load((child / "config.yaml").read_text())
    recorded = raw["parents"]["autoencoder"]
    assert recorded["path"] == str(ae.resolve()) and len(recorded["sha256"]) == 64
    assert "enc.weight" not in RunDir(child).weights.read_bytes()[:2000].decode("latin-1")  # only its own weights
    model = models.load(child)
    assert set(model.parents) == {"autoencoder"} and not model.parents["autoencoder"].training
    assert {n for n, _ in model.named_parameters()} == {"mean", "log_std"}

    png = tmp_path / "child.png"
    assert main(["sample", str(child), "--n", "8", "--seed", "1", "-o", str(png)]) == 0
    assert main(["eval", str(child), "--metrics", "fid", "--n", "200", "--allow-small", "--no-progress"]) == 0
    out = tmp_path / "export"
    assert main(["export", str(child), "--format", "hf", "--out", str(out)]) == 0
    chain = json.loads((out / "chain.json").read_text())["parents"]
    assert chain["autoencoder"]["sha256"] == recorded["sha256"]
    assert (out / "parents" / "autoencoder" / "model.safetensors").read_bytes() == (ae / "model.safetensors").read_bytes()
    board = tmp_path / "board"
    assert main(["compare", str(child), str(ae), "--out", str(board)]) == 0
    assert "on autoencoder ae" in (board / "leaderboard.md").read_text()
    _serve_ok(child)
    capsys.readouterr()

    weights = bytearray((ae / "model.safetensors").read_bytes())
    weights[-1] ^= 1  # one byte of the parent's weights
    (ae / "model.safetensors").write_bytes(bytes(weights))
    _fails_naming_the_parent(capsys, ["sample", str(child), "--n", "4", "-o", str(tmp_path / "again.png")])
    _fails_naming_the_parent(capsys, ["eval", str(child), "--metrics", "fid", "--n", "200", "--allow-small"])
    _fails_naming_the_parent(capsys, ["export", str(child), "--format", "hf", "--out", str(tmp_path / "e2")])
    _fails_naming_the_parent(capsys, ["compare", str(child), "--out", str(tmp_path / "b2")])
    _fails_naming_the_parent(capsys, ["serve", str(child), "--port", "0"])
    _fails_naming_the_parent(capsys, ["train", "--out", str(child), "--resume", "--set", "train.max_steps=90",
                                      "--no-progress"])
    assert not (tmp_path / "again.png").exists() and not (tmp_path / "e2").exists()
    (ae / "model.safetensors").rename(tmp_path / "moved.safetensors")
    code = main(["sample", str(child), "--n", "4", "-o", str(tmp_path / "again.png")])
    err = capsys.readouterr().err
    assert code == 2 and "'autoencoder'" in err and "missing" in err


def _serve_ok(child) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from genforge.serve import ServeSettings, check_specs, create_app

    app = create_app(check_specs([f"child={child}"]), ServeSettings(), load_async=False)
    with TestClient(app) as client:
        r = client.post("/v1/images/generations", json={"model": "child", "n": 2, "seed": 3})
        assert r.status_code == 200, r.text
        assert len(r.json()["data"]) == 2


def test_a_recipe_must_name_the_parents_its_family_stands_on(families, tmp_path, capsys):
    recipe = {"data": {"name": "digits"}, "model": {"family": "toy-latent-gauss"}, "train": {"max_steps": 2}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert main(["train", "--config", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "x")]) == 2
    assert "stands on parents {autoencoder: RUN_DIR}; the recipe names none" in capsys.readouterr().err
    recipe["parents"] = {"autoencoder": str(tmp_path / "nowhere")}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert main(["train", "--config", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "parents.autoencoder stands on the run 'autoencoder'" in err and "missing" in err
    assert not (tmp_path / "x").exists()
