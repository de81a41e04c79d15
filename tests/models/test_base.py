"""The shared protocol: input helpers, config checks, save_pretrained / load."""

from __future__ import annotations

import pytest
import torch
import yaml

from genforge import __version__, models
from genforge.config import ConfigError
from genforge.models.base import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    GenerativeModel,
    ImageModelConfig,
    check_image_batch,
    images_to_unit,
    labels_for,
)
from genforge.models.gan import GANConfig
from genforge.models.vae import VAEConfig


def tiny_gan(**kw) -> GANConfig:
    return GANConfig(**{"channels": 1, "image_size": 8, "z_dim": 4, "g_width": 4, "d_width": 4, **kw})


# ---------------------------------------------------------------- helpers


def test_images_to_unit_scales_uint8_and_rejects_floats():
    x = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    assert torch.equal(images_to_unit(x), torch.tensor([[[[0.0, 1.0]]]]))
    with pytest.raises(TypeError, match="uint8"):
        images_to_unit(x.float())


@pytest.mark.parametrize("shape", [(2, 3, 8, 8, 1), (2, 1, 8, 8), (2, 3, 8, 7), (3, 8, 8)])
def test_check_image_batch_names_both_shapes(shape):
    x = torch.zeros(shape, dtype=torch.uint8)
    with pytest.raises(ValueError, match=rf"\[B, 3, 8, 8\], got \[{', '.join(map(str, shape))}\]"):
        check_image_batch(x, 3, 8)
    check_image_batch(torch.zeros(5, 3, 8, 8, dtype=torch.uint8), 3, 8)


def test_labels_for():
    g = torch.Generator().manual_seed(0)
    cpu = torch.device("cpu")
    assert labels_for(4, None, 0, cpu, g) is None
    with pytest.raises(ValueError, match="unconditional"):
        labels_for(4, 1, 0, cpu, g)
    assert labels_for(3, 2, 5, cpu, g).tolist() == [2, 2, 2]
    assert labels_for(3, [0, 4, 1], 5, cpu, g).tolist() == [0, 4, 1]
    random = labels_for(100, None, 5, cpu, torch.Generator().manual_seed(0))
    assert random.dtype == torch.long and set(random.tolist()) == set(range(5))
    assert torch.equal(random, labels_for(100, None, 5, cpu, torch.Generator().manual_seed(0)))
    for bad in (5, -1):
        with pytest.raises(ValueError, match=r"labels must be in \[0, 4\]"):
            labels_for(3, bad, 5, cpu, g)
    with pytest.raises(ValueError, match="3 labels"):
        labels_for(3, [0, 1], 5, cpu, g)


@pytest.mark.parametrize("kw, field", [({"channels": 2}, "channels"), ({"image_size": 3}, "image_size"),
                                       ({"image_size": 2048}, "image_size"), ({"num_classes": -1}, "num_classes")])
def test_image_config_ranges(kw, field):
    with pytest.raises(ValueError, match=field):
        ImageModelConfig(family="x", **kw)


def test_check_complete():
    with pytest.raises(ValueError, match="channels and model.image_size"):
        ImageModelConfig(family="x").check_complete()
    with pytest.raises(ValueError, match="at least 2 classes"):
        ImageModelConfig(family="x", channels=1, image_size=8, conditional=True, num_classes=1).check_complete()
    ImageModelConfig(family="x", channels=1, image_size=8, conditional=True, num_classes=2).check_complete()


def test_base_protocol_defaults():
    model = models.build(tiny_gan())
    assert isinstance(model, GenerativeModel)
    with pytest.raises(NotImplementedError, match="gan"):
        model.log_likelihood({"x": torch.zeros(1, 1, 8, 8, dtype=torch.uint8)})
    assert GenerativeModel.param_groups(model) == {"loss": list(model.parameters())}


def test_registry_is_in_sync_with_the_classes():
    for family, cls in models.FAMILIES.items():
        assert cls.family == family
        assert cls.config_class().family == family  # the config's default family names its class
        assert models.config_class(family) is cls.config_class
    with pytest.raises(ConfigError, match="unknown model.family 'nope'"):
        models.config_class("nope")


# ---------------------------------------------------------------- save / load


def test_save_writes_config_and_weights(tmp_path):
    model = models.build(tiny_gan())
    model.save_pretrained(tmp_path, run_config={"description": "d", "data": {"name": "digits"}})
    raw = yaml.safe_load((tmp_path / CONFIG_FILE).read_text())
    assert raw["model"]["family"] == "gan" and raw["model"]["z_dim"] == 4
    assert raw["genforge_version"] == __version__ and raw["data"] == {"name": "digits"}
    assert (tmp_path / WEIGHTS_FILE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]  # no temporaries left
    loaded = models.load(tmp_path)
    assert not loaded.training and loaded.config == model.config


def test_load_missing_directory_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=CONFIG_FILE):
        models.load(tmp_path / "nowhere")


def test_load_without_weights_names_the_weights_file(tmp_path):
    models.build(tiny_gan()).save_pretrained(tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        models.load(tmp_path)


def test_loading_weights_of_another_size_is_a_value_error(tmp_path):
    models.build(tiny_gan(image_size=8)).save_pretrained(tmp_path)
    bigger = models.build(tiny_gan(image_size=16))
    with pytest.raises(ValueError, match="does not match this gan model"):
        bigger.load_weights(tmp_path / WEIGHTS_FILE)
    wider = models.build(tiny_gan(g_width=8))
    with pytest.raises(ValueError, match="does not match"):
        wider.load_weights(tmp_path / WEIGHTS_FILE)


def test_loading_weights_of_another_architecture_is_a_value_error(tmp_path):
    models.build(tiny_gan(image_size=16)).save_pretrained(tmp_path)
    plain = models.build(tiny_gan(image_size=16, d_norm="none"))  # the file has BatchNorm tensors this model lacks
    with pytest.raises(ValueError, match=r"unexpected \['discriminator.features.net"):
        plain.load_weights(tmp_path / WEIGHTS_FILE)


def test_edited_config_that_no_longer_matches_the_weights_fails_to_load(tmp_path):
    models.build(VAEConfig(channels=1, image_size=8, width=4, latent_dim=2)).save_pretrained(tmp_path)
    raw = yaml.safe_load((tmp_path / CONFIG_FILE).read_text())
    raw["model"]["latent_dim"] = 3
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="does not match this vae model"):
        models.load(tmp_path)


def test_load_rejects_unknown_config_keys_and_families(tmp_path):
    models.build(tiny_gan()).save_pretrained(tmp_path)
    raw = yaml.safe_load((tmp_path / CONFIG_FILE).read_text())
    raw["model"]["z_dimm"] = 4
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="model.z_dim"):
        models.load(tmp_path)
    raw["model"] = {"family": "diffusionz"}
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="unknown model.family"):
        models.load(tmp_path)
