"""The diffusion family: the shared contract for each objective, guidance, the likelihood bound, and option errors."""

from __future__ import annotations

import pytest
import torch

from genforge.config import DataConfig
from genforge.data import BatchStream, load_images
from genforge.models.diffusion import Diffusion, DiffusionConfig
from tests.models.contract import ImageModelContract, image_batch

TINY = dict(width=8, timesteps=50, vlb_timesteps=4, attention=True)


def cfg(**kw) -> DiffusionConfig:
    return DiffusionConfig(**{"channels": 1, "image_size": 8, "num_classes": 10, "conditional": True, **TINY, **kw})


class TestDDPMEpsilon(ImageModelContract):
    def tiny_config(self):
        return cfg()


class TestDDPMVCosineUnconditional(ImageModelContract):
    def tiny_config(self):
        return cfg(prediction="v", schedule="cosine", conditional=False, num_classes=0)


class TestFlowRGB(ImageModelContract):
    def tiny_config(self):
        return cfg(objective="flow", channels=3, image_size=16, conditional=False, num_classes=0)


class TestFlowLogitNormal(ImageModelContract):
    def tiny_config(self):
        return cfg(objective="flow", time_sampling="logit-normal")


@pytest.mark.parametrize("sampling, middle", [("uniform", 0.5), ("logit-normal", 0.7280)])
def test_training_times_follow_time_sampling(monkeypatch, sampling, middle):
    """The flow loss's times: U(0, 1), or sigmoid(N(0, 1)), whose mass in [1/4, 3/4] is P(|z| < ln 3) = 0.7280."""
    model = Diffusion(cfg(objective="flow", time_sampling=sampling))
    seen = []
    real = model._training_pair
    monkeypatch.setattr(model, "_training_pair", lambda x0, noise, u: seen.append(u) or real(x0, noise, u))
    torch.manual_seed(0)
    batch = {"x": torch.randint(0, 256, (4000, 1, 8, 8), dtype=torch.uint8), "y": torch.randint(0, 10, (4000,))}
    model.losses(batch)
    u = seen[0]
    assert u.shape == (4000,) and 0 < float(u.min()) and float(u.max()) < 1
    assert abs(float(((u > 0.25) & (u < 0.75)).float().mean()) - middle) < 0.03
    assert abs(float(u.mean()) - 0.5) < 0.02


def test_logit_normal_times_are_refused_for_ddpm():
    with pytest.raises(ValueError, match="time_sampling.*flow objective"):
        cfg(time_sampling="logit-normal")


def test_guidance_0_is_the_unconditional_prediction_and_1_the_conditional():
    torch.manual_seed(0)
    model = Diffusion(cfg()).eval()
    for p in model.parameters():  # a trained-looking net: zero-initialised output layers would hide differences
        torch.nn.init.normal_(p, std=0.05)
    x, t, y = torch.randn(4, 1, 8, 8), torch.full((4,), 10.0), torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        uncond, cond = model.unet(x, t, None), model.unet(x, t, y)
        assert not torch.allclose(uncond, cond)
        assert torch.allclose(model._guided(x, t, y, 0.0), uncond)
        assert torch.allclose(model._guided(x, t, y, 1.0), cond)
        assert torch.allclose(model._guided(x, t, y, 3.0), uncond + 3.0 * (cond - uncond), atol=1e-5)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
def test_every_ddpm_sampler_runs_and_is_seeded(sampler):
    model = Diffusion(cfg())
    a = model.sample(3, condition=2, generator=torch.Generator().manual_seed(0), sampler=sampler, steps=5, guidance=2)
    b = model.sample(3, condition=2, generator=torch.Generator().manual_seed(0), sampler=sampler, steps=5, guidance=2)
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b)


def test_ddim_with_eta_0_is_deterministic_given_the_initial_noise():
    model = Diffusion(cfg())
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = model.sample(2, condition=1, generator=g1, sampler="ddim", steps=8, eta=0.0)
    b = model.sample(2, condition=1, generator=g2, sampler="ddim", steps=8, eta=0.0)
    assert torch.equal(a, b)


def test_the_bound_is_finite_and_training_lowers_it():
    data = load_images(DataConfig(name="digits"))
    torch.manual_seed(0)
    model = Diffusion(cfg(timesteps=100, width=16, vlb_timesteps=100))
    batch = {"x": data.test_x[:32], "y": data.test_y[:32]}
    before = model.log_likelihood(batch, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    stream = BatchStream(data.train_x, data.train_y, 64, seed=0)
    for _ in range(60):  # 60 steps already gain ~170 nats per image
        loss = model.losses(next(stream))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    after = model.log_likelihood(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(before).all() and torch.isfinite(after).all()
    assert before.shape == (32,) and (after <= 0).all()  # log-probabilities of discrete pixels
    assert after.mean() > before.mean() + 20, (before.mean(), after.mean())  # nats per 64-pixel image
    estimate = model.log_likelihood(batch, generator=torch.Generator().manual_seed(1), k=10)
    assert abs(float(estimate.mean() - after.mean())) < 0.25 * abs(float(after.mean()))  # strata estimate the sum


@pytest.mark.parametrize("options,match", [
    ({"sampler": "plms"}, "sampler must be one of"),
    ({"steps": 0}, "steps must be >= 1"),
    ({"steps": 51}, "steps must be <= the 50 training timesteps"),
    ({"guidance": -1.0}, "guidance must be in"),
    ({"eta": 2.0}, "eta must be in"),
    ({"sampler": "euler"}, "does not run a ddpm model"),
])
def test_bad_sample_options_name_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        Diffusion(cfg()).sample(2, generator=torch.Generator().manual_seed(0), **options)


def test_guidance_on_an_unconditional_model_and_labels_out_of_range_are_refused():
    with pytest.raises(ValueError, match="guidance needs a class-conditional or text-to-image model"):
        Diffusion(cfg(conditional=False, num_classes=0)).sample(2, guidance=2.0)
    with pytest.raises(ValueError, match="label"):
        Diffusion(cfg()).sample(2, condition=10)
    with pytest.raises(ValueError, match="does not run a flow model"):
        Diffusion(cfg(objective="flow")).sample(2, sampler="ddim")
    with pytest.raises(NotImplementedError, match="flow"):
        Diffusion(cfg(objective="flow")).log_likelihood(image_batch(cfg()))
