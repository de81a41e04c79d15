"""DCGAN: the shared contract over several tiny configs, plus GAN invariants."""

from __future__ import annotations

import pytest
import torch

from genforge import models
from genforge.config import ConfigError, from_dict
from genforge.models.gan import GAN, GANConfig
from tests.models.contract import ImageModelContract, image_batch

TINY = dict(z_dim=8, g_width=4, d_width=4)


def tiny(**kw) -> GANConfig:
    return GANConfig(**{"channels": 1, "image_size": 8, "num_classes": 10, **TINY, **kw})


class TestGAN(ImageModelContract):
    """Unconditional, 1 channel, 8×8, non-saturating loss, BatchNorm discriminator."""

    def tiny_config(self):
        return tiny()


class TestGANConditionalRGB(ImageModelContract):
    """Class-conditional (conditional BN + projection D), 3 channels, 16×16, hinge, spectral norm, R1."""

    # With every |logit| < 1 at init the hinge loss is mean(1 - D(x)) + mean(1 + D(G(z))),
    # whose gradient on the logit bias is exactly -1 + 1 = 0.
    strict_nonzero_grads = False

    def tiny_config(self):
        return tiny(channels=3, image_size=16, conditional=True, loss="hinge", d_norm="spectral", r1_gamma=1.0)


class TestGANConditional28(ImageModelContract):
    """MNIST-shaped: 28×28 = 7·2², conditional, no discriminator normalization."""

    def tiny_config(self):
        return tiny(image_size=28, conditional=True, d_norm="none")


class TestGANModern(ImageModelContract):
    """Resize-conv generator, DiffAugment on every discriminator input, minibatch std, conditional, 28×28."""

    def tiny_config(self):
        return tiny(image_size=28, conditional=True, g_upsample="resize", augment="translation,cutout,brightness",
                    mbstd_group=2)


class TestGANOddSize(ImageModelContract):
    """An odd size (decoded at 28 and center-cropped to 27) with 4 channels."""

    def tiny_config(self):
        return tiny(channels=4, image_size=27)


CONFIGS = [
    pytest.param(tiny(), id="uncond"),
    pytest.param(tiny(channels=3, conditional=True, loss="hinge", d_norm="spectral", r1_gamma=1.0), id="cond-sn-r1"),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_discriminator_loss_has_no_path_to_the_generator(config):
    torch.manual_seed(0)
    model = models.build(config)
    out = model.losses(image_batch(config))
    out["discriminator"].backward()  # no inputs=: any leak through the fakes would reach G
    assert all(p.grad is None for p in model.generator.parameters())
    assert all(p.grad is not None for p in model.discriminator.parameters())


@pytest.mark.parametrize("config", CONFIGS)
def test_each_step_leaves_the_other_network_untouched(config):
    torch.manual_seed(0)
    model = models.build(config)
    batch = image_batch(config)
    groups = model.param_groups()
    for step, other in (("discriminator", "generator"), ("generator", "discriminator")):
        before = [p.detach().clone() for p in groups[other]]
        opt = torch.optim.Adam(groups[step], lr=1e-2)
        model.losses(batch, groups=(step,))[step].backward(inputs=groups[step])
        opt.step()
        opt.zero_grad(set_to_none=True)
        assert all(torch.equal(a, p) for a, p in zip(before, groups[other])), f"a {step} step moved the {other}"
        assert all(p.grad is None for p in groups[other])


def test_param_groups_are_discriminator_then_generator():
    model = models.build(tiny())
    groups = model.param_groups()
    assert list(groups) == ["discriminator", "generator"]
    assert {id(p) for p in groups["generator"]} == {id(p) for p in model.generator.parameters()}


def test_one_group_losses_and_their_logged_entries():
    model = models.build(tiny())
    out = model.losses(image_batch(tiny()), groups=("discriminator",))
    assert set(out) == {"discriminator", "d_real", "d_fake"}
    out = model.losses(image_batch(tiny()), groups=("generator",))
    assert set(out) == {"generator", "d_fake"}


@pytest.mark.parametrize("loss", ["nonsaturating", "hinge"])
def test_losses_match_their_formulas(loss):
    """With D's logits known, the losses are the textbook ones."""
    config = tiny(loss=loss, d_norm="none")
    model = models.build(config)
    batch = image_batch(config)
    torch.manual_seed(5)
    out = model.losses(batch)
    torch.manual_seed(5)
    x = batch["x"].float() / 255 * 2 - 1
    z = torch.randn(x.shape[0], config.z_dim)
    fake = model.generator(z)
    real_logit, fake_logit = model.discriminator(x), model.discriminator(fake)
    if loss == "hinge":
        d = torch.relu(1 - real_logit).mean() + torch.relu(1 + fake_logit).mean()
        g = -fake_logit.mean()
    else:
        d = torch.nn.functional.softplus(-real_logit).mean() + torch.nn.functional.softplus(fake_logit).mean()
        g = torch.nn.functional.softplus(-fake_logit).mean()
    torch.testing.assert_close(out["discriminator"], d)
    torch.testing.assert_close(out["generator"], g)
    torch.testing.assert_close(out["d_real"], real_logit.mean())


def test_r1_penalty_is_logged_and_adds_to_the_discriminator_loss():
    config = tiny(d_norm="none", r1_gamma=10.0)
    model = models.build(config)
    batch = image_batch(config)
    torch.manual_seed(1)
    with_r1 = model.losses(batch, groups=("discriminator",))
    model.config.r1_gamma = 0.0
    torch.manual_seed(1)
    without = model.losses(batch, groups=("discriminator",))
    assert with_r1["r1"] > 0
    torch.testing.assert_close(with_r1["discriminator"], without["discriminator"] + 5.0 * with_r1["r1"])


def test_conditional_samples_follow_the_label():
    """The label changes the image, and the same label with the same seed repeats it."""
    config = tiny(conditional=True)
    torch.manual_seed(0)
    model = models.build(config)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    threes = model.sample(4, condition=3, generator=g())
    fives = model.sample(4, condition=5, generator=g())
    assert threes.shape == (4, 1, 8, 8)
    assert not torch.equal(threes, fives)
    assert torch.equal(threes, model.sample(4, condition=torch.full((4,), 3), generator=g()))
    with pytest.raises(ValueError, match="labels must be in"):
        model.sample(2, condition=10)


def test_sample_uses_running_statistics_so_each_image_is_independent_of_n():
    model = models.build(tiny())
    model.train()
    one = model.sample(4, generator=torch.Generator().manual_seed(0))
    again = model.sample(6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(one, again[:4])


def test_wrong_image_shape_message():
    model = models.build(tiny(channels=3, image_size=16))
    batch = {"x": torch.zeros(2, 1, 16, 16, dtype=torch.uint8)}
    with pytest.raises(ValueError, match=r"expected images of shape \[B, 3, 16, 16\], got \[2, 1, 16, 16\]"):
        model.losses(batch)


@pytest.mark.parametrize("bad, field", [
    ({"z_dim": 0}, "z_dim"), ({"g_width": -1}, "g_width"), ({"r1_gamma": -1.0}, "r1_gamma"),
    ({"loss": "wasserstein"}, "loss"), ({"d_norm": "layer"}, "d_norm"), ({"family": "vae"}, "family"),
    ({"channels": 2}, "channels"), ({"image_size": 2}, "image_size"), ({"zdim": 3}, "z_dim"),
    ({"g_upsample": "pixelshuffle"}, "g_upsample"), ({"augment": "translation,flip"}, "flip"),
    ({"mbstd_group": -1}, "mbstd_group"),
])
def test_bad_config_names_the_field(bad, field):
    with pytest.raises(ConfigError, match=field):
        from_dict(GANConfig, {"family": "gan", **bad}, prefix="model")


def test_conditional_without_classes_cannot_build():
    with pytest.raises(ValueError, match="conditional"):
        GAN(GANConfig(channels=1, image_size=8, conditional=True))


def test_default_config_is_the_mnist_dcgan():
    model = models.build(GANConfig(channels=1, image_size=28))
    # G: Linear(100 → 64·7·7) → ConvT 64→32 (14×14) → ConvT 32→1 (28×28)
    assert model.generator.net.project.out_features == 64 * 7 * 7
    x = model.sample(2, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 28, 28)
