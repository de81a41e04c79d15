"""The diffusion-distill family: a few-step student standing on a flow-matching teacher run.

The shared contract (with a tiny teacher attached), the chain through ``genforge train``/``sample`` (a changed
teacher is refused), the student starting as the teacher and leaving it after training, the falling
distillation loss, and the option and teacher checks.
"""

from __future__ import annotations

import pytest
import torch
import yaml

from genforge import models
from genforge.cli import main
from genforge.config import ConfigError, FieldError
from genforge.models.diffusion import Diffusion, DiffusionConfig
from genforge.models.distill import DiffusionDistill, DistillConfig
from genforge.rundir import weights_sha256
from tests.models.contract import ImageModelContract, image_batch

SHAPE = dict(channels=1, image_size=8, width=8, timesteps=50, attention=True)


def teacher_config(**kw) -> DiffusionConfig:
    return DiffusionConfig(**{**SHAPE, "objective": "flow", "conditional": True, "num_classes": 10, **kw})


def student_config(**kw) -> DistillConfig:
    return DistillConfig(**{**SHAPE, "conditional": True, "num_classes": 10, "steps": [1, 2], "teacher_steps": 2,
                            "fresh": 2, "pool": 16, **kw})


def make_teacher(seed: int = 0, **kw) -> Diffusion:
    """A tiny flow teacher with trained-looking weights (zero-initialised output layers would hide differences)."""
    torch.manual_seed(seed)
    teacher = Diffusion(teacher_config(**kw))
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return teacher.eval()


class TestConditional(ImageModelContract):
    # the step-size MLP's output layer starts at zero, so its first layer's gradient is exactly zero at init
    strict_nonzero_grads = False

    def tiny_config(self):
        return student_config()

    def make_model(self, seed: int = 0):
        teacher = make_teacher(seed, conditional=self.tiny_config().conditional,
                               num_classes=self.tiny_config().num_classes)
        torch.manual_seed(seed)
        return models.build(self.tiny_config(), {"teacher": teacher})

    def test_save_load_round_trip(self, tmp_path):
        """As the contract's, with the teacher saved as a run and recorded under ``parents``."""
        model = self.make_model()
        batch = self.dummy_batch()
        self.adam_step(model, batch, "loss")
        model.parents["teacher"].save_pretrained(tmp_path / "teacher")
        record = {"path": str(tmp_path / "teacher"), "sha256": weights_sha256(tmp_path / "teacher" / "model.safetensors")}
        model.save_pretrained(tmp_path / "student", run_config={"parents": {"teacher": record}})
        loaded = models.load(tmp_path / "student")
        assert type(loaded) is type(model) and loaded.config == model.config
        for key, value in model.state_dict().items():
            assert torch.equal(value, loaded.state_dict()[key]), key
        model.eval()
        seen = []
        for m in (model, loaded):
            torch.manual_seed(7)
            seen.append(m.losses(batch)["loss"].detach())
        assert torch.equal(seen[0], seen[1])
        g = [torch.Generator().manual_seed(1) for _ in range(2)]
        assert torch.equal(model.sample(3, generator=g[0], steps=2), loaded.sample(3, generator=g[1], steps=2))


class TestUnconditional(TestConditional):
    def tiny_config(self):
        return student_config(conditional=False, num_classes=0)


# ---------------------------------------------------------------- the student and its teacher
def test_the_student_starts_as_the_teacher_and_one_step_leaves_it_after_training():
    teacher = make_teacher()
    torch.manual_seed(0)
    student = models.build(student_config(), {"teacher": teacher})
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    from_teacher = teacher.sample(8, condition=5, generator=g(), steps=1, guidance=1.0)
    assert torch.allclose(student.sample(8, condition=5, generator=g(), steps=1), from_teacher, atol=1e-6)
    batch = image_batch(student.config, n=8)
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    for _ in range(5):
        student.losses(batch)["loss"].backward()
        opt.step()
        opt.zero_grad()
    assert student.pool_size() == 10  # 5 steps × fresh=2 trajectories
    after = student.sample(8, condition=5, generator=g(), steps=1)
    assert (after - teacher.sample(8, condition=5, generator=g(), steps=1, guidance=2.0)).abs().max() > 1e-3
    assert (after - from_teacher).abs().max() > 1e-3
    assert all(not p.requires_grad for p in teacher.parameters())  # the teacher is never trained


@pytest.mark.parametrize("method", ["trajectory", "reflow"])
def test_the_held_out_distillation_loss_falls(method):
    teacher = make_teacher()
    torch.manual_seed(0)
    student = models.build(student_config(method=method, fresh=8, pool=64), {"teacher": teacher})
    batch = image_batch(student.config, n=16)

    def held_out() -> float:
        student.eval()
        torch.manual_seed(123)
        with torch.no_grad():
            loss = float(student.losses(batch)["loss"])
        student.train()
        return loss

    before = held_out()
    opt = torch.optim.Adam(student.parameters(), lr=3e-4)
    for _ in range(30):
        student.losses(batch)["loss"].backward()
        opt.step()
        opt.zero_grad()
    assert held_out() < 0.85 * before  # measured: about 0.78 × after 30 steps


def test_rollout_keeps_the_states_at_the_grid_of_every_trained_step_count():
    teacher = make_teacher()
    student = models.build(student_config(steps=[1, 2, 4], teacher_steps=8), {"teacher": teacher})
    z = torch.randn(3, 1, 8, 8)
    path = student.rollout(z, torch.tensor([0, 1, 2]))
    assert path.shape == (3, 5, 1, 8, 8) and torch.equal(path[:, 0], z)  # sigma = 1, .75, .5, .25, 0
    assert not torch.allclose(path[:, 1], path[:, 2])


def test_sampling_takes_up_to_the_trained_steps_and_is_seeded():
    student = models.build(student_config(steps=[1, 2, 4], teacher_steps=4), {"teacher": make_teacher()})
    for steps in (1, 2, 3, 4):
        a = student.sample(5, generator=torch.Generator().manual_seed(0), steps=steps)
        b = student.sample(5, generator=torch.Generator().manual_seed(0), steps=steps)
        assert a.shape == (5, 1, 8, 8) and torch.equal(a, b)
    with pytest.raises(ConfigError, match=r"sample\.steps.*<= 4") as err:
        student.sample(2, steps=5)
    assert err.value.key == "sample.steps"


def test_a_teacher_of_another_shape_or_objective_is_refused():
    with pytest.raises(ConfigError, match="model.width is 8 but the teacher run's is 16"):
        models.build(student_config(), {"teacher": make_teacher(width=16)})
    ddpm = Diffusion(teacher_config(objective="ddpm"))
    with pytest.raises(ConfigError, match="flow-matching"):
        models.build(student_config(), {"teacher": ddpm})
    with pytest.raises(ValueError, match="teacher"):
        models.build(student_config())


def test_config_checks():
    with pytest.raises(FieldError, match="teacher_steps"):
        student_config(steps=[1, 3], teacher_steps=4)
    with pytest.raises(FieldError, match="steps"):
        student_config(steps=[])
    with pytest.raises(FieldError, match="fresh"):
        student_config(fresh=32, pool=16)
    assert student_config(steps=[1, 2, 3], teacher_steps=6).grid == 6


# ---------------------------------------------------------------- runs built on runs, through the CLI
def _recipe(tmp_path, name: str, model: dict, parents: dict | None = None):
    recipe = {"description": f"test {name}", "data": {"name": "digits"}, "model": model,
              "train": {"max_steps": 6, "batch_size": 16, "lr": 1e-3, "ema_decay": 0.0, "log_every": 3,
                        "sample_every": 6, "checkpoint_every": 6, "num_threads": 1},
              "sample": {"n": 8}, **({"parents": parents} if parents else {})}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    out = tmp_path / name
    assert main(["train", "--config", str(path), "--out", str(out), "--no-progress"]) == 0
    return out


def test_a_student_run_stands_on_its_teacher_run_and_refuses_a_changed_one(tmp_path, capsys):
    shape = {"width": 8, "timesteps": 50, "attention": True, "conditional": True}
    teacher = _recipe(tmp_path, "teacher", {"family": "diffusion", "objective": "flow", **shape})
    student = _recipe(tmp_path, "student", {"family": "diffusion-distill", "steps": [1, 2], "teacher_steps": 2,
                                            "fresh": 4, "pool": 32, **shape}, parents={"teacher": str(teacher)})
    raw = yaml.safe_load((student / "config.yaml").read_text())
    assert raw["parents"]["teacher"]["path"] == str(teacher.resolve())
    model = models.load(student)
    assert isinstance(model, DiffusionDistill) and not model.parents["teacher"].training
    assert not any(n.startswith("teacher") for n, _ in model.named_parameters())
    png = tmp_path / "s.png"
    assert main(["sample", str(student), "--n", "4", "--seed", "1", "--steps", "2", "-o", str(png)]) == 0
    assert png.is_file()
    assert main(["eval", str(student), "--metrics", "fid", "--n", "200", "--allow-small", "--no-progress"]) == 0
    _serve_ok(student)
    capsys.readouterr()
    weights = bytearray((teacher / "model.safetensors").read_bytes())
    weights[-1] ^= 1
    (teacher / "model.safetensors").write_bytes(bytes(weights))
    assert main(["sample", str(student), "--n", "4", "-o", str(tmp_path / "again.png")]) == 2
    err = capsys.readouterr().err
    assert "'teacher'" in err and "weights changed" in err
    assert not (tmp_path / "again.png").exists()


def _serve_ok(run) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from genforge.serve import ServeSettings, check_specs, create_app

    app = create_app(check_specs([f"student={run}"]), ServeSettings(), load_async=False)
    with TestClient(app) as client:
        r = client.post("/v1/images/generations", json={"model": "student", "n": 2, "seed": 3, "steps": 2})
        assert r.status_code == 200, r.text
        assert len(r.json()["data"]) == 2
        r = client.post("/v1/images/generations", json={"model": "student", "n": 1, "steps": 3})
        assert r.status_code in (400, 422) and "steps" in r.text, r.text  # more than it was trained for


def test_the_shipped_recipe_fits_the_mnist_diffusion_teacher():
    """mnist-diffusion-distill's student has the U-Net of mnist-diffusion (shape filled in as the trainer does)."""
    from genforge.config import from_dict, load_yaml, recipe_path

    shape = {"channels": 1, "image_size": 28, "num_classes": 10}
    teacher_raw = load_yaml(recipe_path("mnist-diffusion"))["model"]
    student_raw = load_yaml(recipe_path("mnist-diffusion-distill"))["model"]
    teacher = Diffusion(from_dict(DiffusionConfig, {**teacher_raw, **shape}, prefix="model"))
    student = models.build(from_dict(DistillConfig, {**student_raw, **shape}, prefix="model"), {"teacher": teacher})
    assert torch.equal(student.unet.stem.weight, teacher.unet.stem.weight)
    assert student.config.steps == [1, 2, 4, 8] and student.config.guidance == 2.0
