"""Inpainting, latents and super-resolution at the model level: the capabilities each family declares."""

from __future__ import annotations

import pytest
import torch

from genforge.config import ConfigError
from genforge.models.capabilities import Inpaints, Inverts, LatentSpace, Upscales
from genforge.models.diffusion import Diffusion, DiffusionConfig
from genforge.models.gan import GAN, GANConfig
from genforge.models.gpt import GPT, GPTConfig
from genforge.models.latent_fit import LatentFitOptions, fit_latents
from genforge.models.repaint import jump_schedule, levels
from genforge.models.samplers import make_sampler
from genforge.models.superres import SuperRes, SuperResConfig
from genforge.models.vae import VAE, VAEConfig

S = 8


def families():
    return {
        "gan": GAN(GANConfig(channels=1, image_size=S, conditional=True, num_classes=3, g_width=4, d_width=4, z_dim=4)),
        "vae": VAE(VAEConfig(channels=1, image_size=S, conditional=True, num_classes=3, latent_dim=3, width=4)),
        "flow": Diffusion(DiffusionConfig(channels=1, image_size=S, conditional=True, num_classes=3, width=8,
                                          objective="flow", timesteps=100)),
        "ddpm": Diffusion(DiffusionConfig(channels=1, image_size=S, width=8, timesteps=100)),
    }


FAST = {"gan": {"steps": 3}, "vae": {"steps": 3, "encode_iters": 1}, "flow": {"steps": 4, "jump_length": 2,
        "resamples": 2, "classify": 2}, "ddpm": {"steps": 4, "jump_length": 2, "resamples": 2}}


@pytest.mark.parametrize("name", ["gan", "vae", "flow", "ddpm"])
def test_inpaint_keeps_known_pixels_and_fills_the_rest(name):
    model = families()[name].eval()
    assert isinstance(model, Inpaints)
    x = torch.rand(3, 1, S, S)
    fill = torch.zeros(3, 1, S, S, dtype=torch.bool)
    fill[:, :, 2:6, 2:6] = True
    out = model.inpaint(x, fill, generator=torch.Generator().manual_seed(0), **FAST[name])
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.equal(out[~fill.expand_as(x)], x[~fill.expand_as(x)])
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert not torch.allclose(out[fill.expand_as(x)], x[fill.expand_as(x)])  # the region was replaced
    again = model.inpaint(x, fill, generator=torch.Generator().manual_seed(0), **FAST[name])
    assert torch.equal(out, again)  # seeded


@pytest.mark.parametrize("name", ["gan", "vae", "flow"])
def test_inpaint_with_a_given_label(name):
    model = families()[name].eval()
    x, fill = torch.rand(2, 1, S, S), torch.ones(2, 1, S, S, dtype=torch.bool)
    out = model.inpaint(x, fill, condition=2, generator=torch.Generator().manual_seed(1), **FAST[name])
    assert out.shape == x.shape


def test_inpaint_options_are_checked_by_name():
    m = families()
    with pytest.raises(ConfigError, match="resamples"):
        m["flow"].parse_inpaint_options({"resample": 2})
    with pytest.raises(ValueError, match="jump_length"):
        m["flow"].parse_inpaint_options({"steps": 4, "jump_length": 9})
    with pytest.raises(ValueError, match="restarts"):
        m["gan"].parse_inpaint_options({"restarts": 0})
    with pytest.raises(ValueError, match="does not run a ddpm model for this"):
        m["ddpm"].inpaint(torch.rand(1, 1, S, S), torch.ones(1, 1, S, S, dtype=torch.bool), sampler="dpm++")
    with pytest.raises(ValueError, match="guidance needs"):
        m["ddpm"].inpaint(torch.rand(1, 1, S, S), torch.ones(1, 1, S, S, dtype=torch.bool), guidance=2.0)


def test_a_family_without_the_capability_does_not_declare_it():
    gpt = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=8))
    assert not isinstance(gpt, (Inpaints, LatentSpace, Upscales))
    assert not isinstance(families()["gan"], Inverts)


@pytest.mark.parametrize("steps,j,r", [(10, 2, 3), (25, 5, 4), (7, 3, 2), (5, 5, 1)])
def test_repaint_schedule_walks_from_noise_to_clean_with_jumps(steps, j, r):
    path = jump_schedule(steps, j, r)
    assert path[0] == 0 and path[-1] == steps
    moves = [b - a for a, b in zip(path, path[1:])]
    assert set(moves) <= {-1, 1}
    assert min(path) >= 0 and max(path) <= steps
    ups = moves.count(1)
    assert ups == steps + (r - 1) * j * (steps // j)  # every jump point walks its segment r times


def test_repaint_levels_are_variance_preserving_or_linear():
    ddpm = families()["ddpm"]
    lv = levels(make_sampler("ddpm", ddpm.schedule, 10), ddpm.schedule.alphas_cumprod)
    assert all(abs(a * a + s * s - 1) < 1e-9 for a, s in lv) and lv[-1] == (1.0, 0.0)
    flow = families()["flow"]
    lv = levels(make_sampler("euler", flow.schedule, 10), None)
    assert all(abs(a + s - 1) < 1e-6 for a, s in lv) and lv[0] == (0.0, 1.0) and lv[-1] == (1.0, 0.0)


@pytest.mark.parametrize("name,opts", [("gan", {}), ("vae", {}), ("flow", {}), ("ddpm", {"sampler": "ddim"}),
                                       ("ddpm", {})])
def test_sample_is_the_rendering_of_the_drawn_latents(name, opts):
    model = families()[name].eval()
    a = model.sample(4, condition=None, generator=torch.Generator().manual_seed(3), **opts)
    z, y = model.draw_latents(4, None, torch.Generator().manual_seed(3))
    assert torch.equal(model.render(z, y, **opts), a)


@pytest.mark.parametrize("name", ["gan", "vae", "flow"])
def test_one_hot_class_weights_render_like_integer_labels(name):
    model = families()[name].eval()
    z, y = model.draw_latents(3, torch.tensor([0, 1, 2]), torch.Generator().manual_seed(0))
    w = torch.eye(3)[y]
    assert torch.allclose(model.render(z, w), model.render(z, y), atol=1e-6)
    mix = model.render(z, torch.full((3, 3), 1 / 3))
    assert mix.shape == (3, 1, S, S)


def test_rendering_refuses_noisy_options():
    m = families()
    with pytest.raises(ValueError, match="deterministic sampler"):
        m["ddpm"].render(torch.randn(1, 1, S, S), sampler="ddpm")
    with pytest.raises(ValueError, match="noise"):
        m["vae"].render(torch.randn(1, 3), torch.tensor([0]), noise=True)
    with pytest.raises(ValueError, match=r"latents must be \[n, 4\]"):
        m["gan"].render(torch.randn(1, 5), torch.tensor([0]))


@pytest.mark.parametrize("name,opts", [("flow", {"steps": 40}), ("ddpm", {"sampler": "ddim", "steps": 50})])
def test_ode_inversion_renders_back_to_the_image(name, opts):
    model = families()[name].eval()
    x = model.sample(2, generator=torch.Generator().manual_seed(0), **opts)  # an image on the model's manifold
    z = model.invert(x, None, **opts)
    back = model.render(z, None, **opts)
    assert (back - x).abs().mean() < 0.02 < (torch.rand_like(x) - x).abs().mean()


def test_vae_inversion_is_the_posterior_mean():
    vae = families()["vae"].eval()
    x, y = torch.rand(2, 1, S, S), torch.tensor([0, 2])
    assert torch.equal(vae.invert(x, y), vae.encode(x, y)[0])


def test_latent_fit_recovers_least_squares_latents():
    torch.manual_seed(0)
    w = torch.randn(16, 3)  # render(z) = W z as a 1x4x4 image

    def render(z, y):
        return (z @ w.T).view(-1, 1, 4, 4)

    z_true = torch.randn(2, 3)
    target = render(z_true, None)
    known = torch.ones(2, 1, 4, 4)
    known[:, :, :2] = 0  # half the pixels known

    def nll(out, tgt, msk):
        return ((out - tgt).pow(2) * msk).flatten(1).sum(1)

    opts = LatentFitOptions(steps=800, lr=0.05, restarts=2, prior=0.0)
    z, _ = fit_latents(render, nll, target, known, torch.zeros(4, 3), None, opts)
    rows = known[0, 0].flatten().bool()
    expected = torch.linalg.lstsq(w[rows], target.view(2, 16)[:, rows].T).solution.T
    assert torch.allclose(z, expected, atol=1e-3)


def test_superres_upscales_the_sides_it_was_trained_for():
    sr = SuperRes(SuperResConfig(channels=1, image_size=S, factors=[2, 4], width=8)).eval()
    assert isinstance(sr, Upscales) and sr.upscale_factors == (2, 4)
    loss = sr.losses({"x": torch.randint(0, 256, (4, 1, S, S), dtype=torch.uint8)})["loss"]
    assert torch.isfinite(loss)
    for side in (4, 2):
        out = sr.upscale(torch.rand(3, 1, side, side), generator=torch.Generator().manual_seed(0), steps=2)
        assert out.shape == (3, 1, S, S) and 0 <= float(out.min()) and float(out.max()) <= 1
    with pytest.raises(ValueError, match=r"upscales to 8x8 from 4x4 \(x2\), 2x2 \(x4\); got a 3x3 image"):
        sr.upscale(torch.rand(1, 1, 3, 3))
    with pytest.raises(ValueError, match="genforge upscale"):
        sr.sample(2)
    with pytest.raises(ValueError, match="divisible"):
        SuperResConfig(channels=1, image_size=9, factors=[2])
    with pytest.raises(ValueError, match="conditional=false"):
        SuperResConfig(conditional=True)
