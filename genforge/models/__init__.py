"""Model families and the registry that maps ``model.family`` to a class.

Adding a family: one file here, one entry in :data:`FAMILIES`, recipes, and a
test that inherits ``tests/models/contract.py``.
"""

from __future__ import annotations

from pathlib import Path

from genforge.config import ConfigError, from_dict
from genforge.models.base import WEIGHTS_FILE, GenerativeModel, InvalidWeightsFile, ModelConfig, check_finite_weights
from genforge.rundir import Parent, RunDir, check_parent
from genforge.models.autoencoder import Autoencoder
from genforge.models.clip import Clip
from genforge.models.diffusion import Diffusion
from genforge.models.distill import DiffusionDistill
from genforge.models.gan import GAN
from genforge.models.gpt import GPT
from genforge.models.latent_diffusion import LatentDiffusion
from genforge.models.superres import SuperRes
from genforge.models.vae import VAE

FAMILIES: dict[str, type[GenerativeModel]] = {"gan": GAN, "vae": VAE, "gpt": GPT, "diffusion": Diffusion,
                                        "superres": SuperRes, "diffusion-distill": DiffusionDistill,
                                        "autoencoder": Autoencoder, "latent-diffusion": LatentDiffusion,
                                        "clip": Clip}

__all__ = ["FAMILIES", "GenerativeModel", "ModelConfig", "config_class", "build", "load", "load_parents"]


def config_class(family: str) -> type[ModelConfig]:
    """The config dataclass of ``family``; an unknown family is a ``ConfigError``."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown model.family {family!r}; choose from {', '.join(sorted(FAMILIES))}")
    return FAMILIES[family].config_class


def build(config: ModelConfig, parents: dict[str, GenerativeModel] | None = None) -> GenerativeModel:
    """Instantiate the family named by ``config.family``, standing on ``parents`` (role → loaded model)."""
    model = FAMILIES[config.family](config)
    model.attach_parents(parents or {})  # checks the roles: the required ones present, none unknown
    return model


def load_parents(records: dict[str, dict[str, str]], *, child: str = "") -> dict[str, GenerativeModel]:
    """Load the runs named by a resolved ``parents`` section (role → ``{path, sha256}``), checking each
    one's weights against its sha256 first (:meth:`RunDir.verify_chain`)."""
    out = {}
    for role, record in records.items():
        parent = Parent(role, Path(record["path"]), record.get("sha256", ""))
        check_parent(parent, child or "this run")
        out[role] = load(parent.path)  # which checks the parent's own chain
    return out


def load(directory: str | Path, *, weights: str = WEIGHTS_FILE) -> GenerativeModel:
    """Load a model saved by ``save_pretrained`` (or a run directory): no pickle involved.

    Raises:
        FileNotFoundError: the directory lacks ``config.yaml`` or the weights file.
        RunDirError: ``config.yaml`` is not a YAML mapping.
        ConfigError: its ``model`` section is not a valid config of a known family.
        ValueError: the weights file is not valid safetensors, does not match the
            config, or holds NaN/Inf (a diverged run).
    """
    return _load(RunDir(directory), weights, check_chain=True)


def _load(run: RunDir, weights: str, *, check_chain: bool) -> GenerativeModel:
    """:func:`load`; ``check_chain`` verifies every run this one stands on (done once, at the top: the parents
    are then loaded without hashing their ancestors again)."""
    cfg_path, w_path = run.config, run.path / weights
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: is {run.path} a genforge run or model directory?")
    raw = run.read_config()
    model_raw = raw.get("model") or {}
    if not isinstance(model_raw, dict):
        raise ConfigError(f"{cfg_path}: the model section must be a mapping, got {type(model_raw).__name__}")
    config = from_dict(config_class(model_raw.get("family", "")), model_raw, prefix="model")
    chain = run.verify_chain(raw) if check_chain else run.parents(raw)  # refuses a missing or changed parent
    parents = {p.role: _load(RunDir(p.path), WEIGHTS_FILE, check_chain=False) for p in chain}
    model = build(config, parents)
    try:
        model.load_weights(w_path)
    except InvalidWeightsFile as e:
        if not run.checkpoints.is_dir():
            raise
        raise InvalidWeightsFile(f"{e}; `genforge train --out {run.path} --resume` continues from the newest "
                                 f"checkpoint") from None
    check_finite_weights(model, w_path)
    return model.eval()
