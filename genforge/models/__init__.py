"""Model families and the registry that maps ``model.family`` to a class.

Adding a family: one file here, one entry in :data:`FAMILIES`, recipes, and a
test that inherits ``tests/models/contract.py``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from genforge.config import ConfigError, from_dict
from genforge.models.base import CONFIG_FILE, WEIGHTS_FILE, GenerativeModel, ModelConfig
from genforge.models.gan import GAN
from genforge.models.gpt import GPT
from genforge.models.vae import VAE

FAMILIES: dict[str, type[GenerativeModel]] = {"gan": GAN, "vae": VAE, "gpt": GPT}

__all__ = ["FAMILIES", "GenerativeModel", "ModelConfig", "config_class", "build", "load"]


def config_class(family: str) -> type[ModelConfig]:
    """The config dataclass of ``family``; an unknown family is a ``ConfigError``."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown model.family {family!r}; choose from {', '.join(sorted(FAMILIES))}")
    return FAMILIES[family].config_class


def build(config: ModelConfig) -> GenerativeModel:
    """Instantiate the family named by ``config.family``."""
    return FAMILIES[config.family](config)


def load(directory: str | Path, *, weights: str = WEIGHTS_FILE) -> GenerativeModel:
    """Load a model saved by ``save_pretrained`` (or a run directory): no pickle involved.

    Raises:
        FileNotFoundError: the directory lacks ``config.yaml`` or the weights file.
    """
    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG_FILE, directory / weights
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: is {directory} a genforge run or model directory?")
    raw = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    model_raw = raw.get("model") or {}
    config = from_dict(config_class(model_raw.get("family", "")), model_raw, prefix="model")
    model = build(config)
    model.load_weights(w_path)
    return model.eval()
