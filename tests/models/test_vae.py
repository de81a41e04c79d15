"""VAE: the shared contract over several tiny configs, plus KL / ELBO / IWAE invariants."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from genforge import models
from genforge.config import ConfigError, from_dict
from genforge.models.vae import VAE, VAEConfig, gaussian_kl
from tests.models.contract import ImageModelContract, image_batch

TINY = dict(latent_dim=4, width=4, iw_samples=8)


def tiny(**kw) -> VAEConfig:
    return VAEConfig(**{"channels": 1, "image_size": 8, "num_classes": 10, **TINY, **kw})


class TestVAE(ImageModelContract):
    """Unconditional Bernoulli, 1 channel, 8×8."""

    def tiny_config(self):
        return tiny()


class TestVAEConditionalGaussianRGB(ImageModelContract):
    """Conditional Gaussian (learned σ), 3 channels, 16×16, β = 0.5."""

    def tiny_config(self):
        return tiny(channels=3, image_size=16, conditional=True, likelihood="gaussian", beta=0.5)


class TestVAEConditional28(ImageModelContract):
    """MNIST-shaped 28×28, conditional Bernoulli."""

    def tiny_config(self):
        return tiny(image_size=28, conditional=True)


class TestVAEOddSize(ImageModelContract):
    """Odd side 7 (no stride-2 stage at all), Gaussian, 4 channels."""

    def tiny_config(self):
        return tiny(channels=4, image_size=7, likelihood="gaussian")


# ---------------------------------------------------------------- KL and likelihood terms


def test_kl_is_zero_at_the_prior():
    assert torch.equal(gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)), torch.zeros(3))


def test_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 4, generator=g)
    logvar = torch.randn(3, 4, generator=g) * 0.5
    q = Normal(mu, (0.5 * logvar).exp())
    z = q.sample((200_000,))  # [N, 3, 4]
    mc = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1).mean(0)  # [3]
    torch.testing.assert_close(gaussian_kl(mu, logvar), mc, rtol=0.02, atol=0.02)
    assert (gaussian_kl(mu, logvar) > 0).all()


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_log_px_matches_torch_distributions(likelihood):
    model = models.build(tiny(likelihood=likelihood))
    g = torch.Generator().manual_seed(0)
    out = torch.randn(2, 1, 8, 8, generator=g)
    x = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()  # binary, valid for both densities
    if likelihood == "bernoulli":
        ref = Bernoulli(logits=out).log_prob(x).flatten(1).sum(1)
    else:
        with torch.no_grad():
            model.log_sigma.fill_(-1.3)
        ref = Normal(out, math.exp(-1.3)).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(model.log_px(out, x), ref)


def test_loss_is_recon_plus_beta_kl():
    config = tiny(beta=0.25)
    model = models.build(config)
    out = model.losses(image_batch(config))
    torch.testing.assert_close(out["loss"], out["recon"] + 0.25 * out["kl"])
    assert out["kl"] >= 0 and out["recon"] > 0


# ---------------------------------------------------------------- the importance-weighted bound


def crosses(n: int, size: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Images with two latent factors: one bright row and one bright column at random places."""
    g = torch.Generator().manual_seed(seed)
    rows, cols = torch.randint(0, size, (2, n), generator=g)
    x = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    x[torch.arange(n), 0, rows, :] = 255
    x[torch.arange(n), 0, :, cols] = 255
    return {"x": x, "y": torch.arange(n) % 10}


@pytest.fixture(scope="module")
def fitted():
    """A tiny VAE after 60 Adam steps on structured images, so q(z|x) is informative
    and the IWAE bound is measurably above the ELBO."""
    torch.manual_seed(0)
    model = models.build(tiny())
    batch = crosses(16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        model.losses(batch)["loss"].backward()
        opt.step()
        opt.zero_grad()
    assert model.losses(batch)["kl"] > 0.3  # the posterior is not collapsed
    return model, batch


def test_iwae_bound_is_at_least_the_elbo(fitted):
    model, batch = fitted
    g = torch.Generator().manual_seed(0)
    iwae = model.log_likelihood(batch, k=64, generator=g)
    elbo = torch.stack([model.log_likelihood(batch, k=1, generator=g) for _ in range(64)]).mean(0)
    assert iwae.shape == (16,)
    assert iwae.mean() >= elbo.mean() + 0.1


def test_one_sample_bound_is_the_elbo_in_expectation(fitted):
    model, batch = fitted
    g = torch.Generator().manual_seed(1)
    k1 = torch.stack([model.log_likelihood(batch, k=1, generator=g) for _ in range(400)]).mean()
    torch.manual_seed(1)
    neg_elbo = torch.stack([(lambda o: o["recon"] + o["kl"])(model.losses(batch)) for _ in range(400)]).mean()
    torch.testing.assert_close(k1, -neg_elbo, rtol=0, atol=0.15)


def test_log_likelihood_is_seeded_and_defaults_to_iw_samples(fitted):
    model, batch = fitted
    a = model.log_likelihood(batch, generator=torch.Generator().manual_seed(3))
    b = model.log_likelihood(batch, k=model.config.iw_samples, generator=torch.Generator().manual_seed(3))
    c = model.log_likelihood(batch, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="k must be"):
        model.log_likelihood(batch, k=0)


def test_bernoulli_log_likelihood_is_not_positive(fitted):
    model, batch = fitted
    assert (model.log_likelihood(batch, k=16) <= 0).all()


def test_examples_do_not_depend_on_their_batch(fitted):
    model, batch = fitted
    model.train()
    full = model.reconstruct(batch["x"])
    part = model.reconstruct(batch["x"][:3])
    torch.testing.assert_close(full[:3], part)


# ---------------------------------------------------------------- sampling and reconstruction


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_noisy_samples_come_from_the_likelihood(likelihood):
    model = models.build(tiny(likelihood=likelihood))
    mean = model.sample(6, generator=torch.Generator().manual_seed(0))
    noisy = model.sample(6, generator=torch.Generator().manual_seed(0), noise=True)
    assert noisy.shape == mean.shape and noisy.dtype == torch.float32
    assert 0 <= float(noisy.min()) and float(noisy.max()) <= 1
    if likelihood == "bernoulli":
        assert set(noisy.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(mean, noisy)
    assert torch.equal(noisy, model.sample(6, generator=torch.Generator().manual_seed(0), noise=True))


def test_reconstruct_shape_and_labels():
    config = tiny(conditional=True, image_size=16)
    model = models.build(config)
    batch = image_batch(config, n=5)
    r = model.reconstruct(batch["x"], batch["y"])
    assert r.shape == (5, 1, 16, 16) and r.dtype == torch.float32
    assert 0 <= float(r.min()) and float(r.max()) <= 1
    with pytest.raises(ValueError, match="labels"):
        model.reconstruct(batch["x"])
    with pytest.raises(ValueError, match=r"\[B, 1, 16, 16\]"):
        model.reconstruct(batch["x"][:, :, :8, :8])


def test_conditional_decoder_uses_the_label():
    torch.manual_seed(0)
    model = models.build(tiny(conditional=True))
    a = model.sample(4, condition=1, generator=torch.Generator().manual_seed(0))
    b = model.sample(4, condition=2, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(a, b)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("bad, field", [
    ({"latent_dim": 0}, "latent_dim"), ({"width": 0}, "width"), ({"beta": -1.0}, "beta"),
    ({"iw_samples": 0}, "iw_samples"), ({"likelihood": "laplace"}, "likelihood"),
    ({"family": "gan"}, "family"), ({"kl_warmup_steps": 10}, "kl_warmup_steps"),
])
def test_bad_config_names_the_field(bad, field):
    with pytest.raises(ConfigError, match=field):
        from_dict(VAEConfig, {"family": "vae", **bad}, prefix="model")


def test_gaussian_has_a_per_channel_scale_and_bernoulli_none():
    assert models.build(tiny(channels=3, likelihood="gaussian")).log_sigma.shape == (3,)
    assert not hasattr(models.build(tiny()), "log_sigma")
    assert isinstance(models.build(tiny()), VAE)
