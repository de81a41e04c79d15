"""The super-resolution family under the shared contract: an image-conditioned family samples from the source
images of its ``Condition``, and says how real images become sources and which baseline it must beat."""

from __future__ import annotations

import pytest
import torch

from genforge.config import ConfigError
from genforge.models.conditions import Condition, parse_condition
from genforge.models.superres import SuperRes, SuperResConfig

from .contract import ImageModelContract


def cfg(**kw) -> SuperResConfig:
    base = dict(channels=1, image_size=8, factors=[2, 4], width=8, blocks=1, max_mult=2)
    return SuperResConfig(**{**base, **kw})


class TestSuperRes(ImageModelContract):
    def tiny_config(self):
        return cfg()

    def sample_condition(self, model, n):
        g = torch.Generator().manual_seed(5)
        return Condition(image=torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=g))


class TestSuperResRGB(TestSuperRes):
    def tiny_config(self):
        return cfg(channels=3, image_size=16, factors=[4])

    def sample_condition(self, model, n):
        return Condition(image=torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(5)))


def test_sources_baseline_and_the_condition_parser():
    model = SuperRes(cfg()).eval()
    assert model.accepted_conditions() == ("image",) == model.required_conditions()
    assert model.source_variants() == ("x2", "x4")
    x = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    low = model.make_source(x, "x4")
    assert low.shape == (3, 1, 2, 2) and low.dtype == torch.uint8
    assert int(low[0, 0, 0, 0]) == round(float(x[0, 0, :4, :4].float().mean()))  # area average
    name, up = model.baseline(low)
    assert name.startswith("bicubic") and up.shape == (3, 1, 8, 8) and up.dtype == torch.uint8
    cond = parse_condition(model, {"image": low, "strength": 1.0})
    assert cond.kinds() == ("image",) and cond.rows() == 3
    out = model.sample(3, condition=cond, generator=torch.Generator().manual_seed(0), steps=2)
    assert out.shape == (3, 1, 8, 8)
    with pytest.raises(ConfigError, match=r"does not take a class label \(label\); it takes a source image") as e:
        parse_condition(model, {"label": 3})
    assert e.value.key == "sample.label"
    with pytest.raises(ConfigError, match="does not take a text prompt"):
        parse_condition(model, {"prompt": "a bigger digit"})


def test_the_suggested_sample_command_gives_the_condition_the_model_needs():
    from genforge.tasks import get_task

    assert get_task("image").hint(SuperRes(cfg())).endswith("--image SOURCE.png")
    from genforge.models.gan import GAN, GANConfig

    gan = GAN(GANConfig(channels=1, image_size=8, g_width=4, d_width=4, z_dim=4))
    assert get_task("image").hint(gan) == get_task("image").sample_hint
