"""The diffusion family's settings: :class:`DiffusionConfig` (shape, objective, denoiser, caption encoder) and
:class:`DiffusionSampleOptions` (sampler, steps, guidance, negative prompt). See :mod:`genforge.models.diffusion`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from genforge.config import FieldError
from genforge.models.base import ImageModelConfig, SampleOptions
from genforge.models.samplers import SAMPLERS

__all__ = ["DiffusionConfig", "DiffusionSampleOptions"]


@dataclass(kw_only=True)
class DiffusionConfig(ImageModelConfig):
    """Diffusion hyper-parameters; the shape fields come from :class:`ImageModelConfig`."""

    FAMILY: ClassVar[str] = "diffusion"
    family: str = "diffusion"
    objective: Literal["ddpm", "flow"] = "ddpm"
    prediction: Literal["epsilon", "v"] = "epsilon"  # ddpm only (flow predicts the velocity)
    schedule: Literal["linear", "cosine"] = "linear"  # ddpm only
    timesteps: int = 1000  # T
    # flow only: training times s ~ U(0, 1), or sigmoid(N(0, 1)) (logit-normal, Esser et al. 2024: more of the
    # steps on the middle noise levels, where the velocity is hardest to predict)
    time_sampling: Literal["uniform", "logit-normal"] = "uniform"
    backbone: Literal["unet", "dit"] = "unet"  # the denoiser: a U-Net, or a diffusion transformer (DiT)
    width: int = 32  # U-Net channels at full resolution, ×2 per level down (up to ×max_mult); DiT token width
    max_mult: int = 4
    blocks: int = 1  # residual blocks per level
    attention: bool = True  # self-attention at the lowest resolution
    depth: int = 6  # DiT: transformer blocks
    heads: int = 4  # DiT: attention heads
    patch: int = 2  # DiT: a token per patch × patch pixels (latent cells)
    dropout: float = 0.0
    label_dropout: float = 0.1  # conditional / prompted: probability of training on no label / the empty caption
    text_width: int = 128  # prompted: width of the caption encoder
    text_layers: int = 2  # prompted: its transformer layers
    frozen_text: bool = False  # prompted: captions are read by the parents.text_encoder run (a clip run), frozen;
    # set when that parent is named, with text_words / text_len / text_width / text_layers copied from it
    vlb_timesteps: int = 50  # k of log_likelihood: stratified timesteps per image (T = exact sum)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family != self.FAMILY:
            raise FieldError("family", f"must be {self.FAMILY!r} for a {type(self).__name__}, got {self.family!r}")
        if not 2 <= self.timesteps <= 100_000:
            raise FieldError("timesteps", f"must be in [2, 100000], got {self.timesteps}")
        for name in ("width", "max_mult", "blocks"):
            if not 1 <= getattr(self, name) <= 4096:
                raise ValueError(f"{name} must be in [1, 4096], got {getattr(self, name)}")
        if not 1 <= self.depth <= 64:
            raise FieldError("depth", f"must be in [1, 64], got {self.depth}")
        if not 1 <= self.heads <= 64:
            raise FieldError("heads", f"must be in [1, 64], got {self.heads}")
        if self.backbone == "dit" and (self.width % 4 or self.width % self.heads):
            raise FieldError("width", f"a DiT's width must be a multiple of 4 and of heads={self.heads}, got "
                             f"{self.width}")
        if self.patch not in (1, 2, 4, 8):
            raise FieldError("patch", f"must be 1, 2, 4 or 8, got {self.patch}")
        if not 0.0 <= self.dropout < 1.0:
            raise FieldError("dropout", f"must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.label_dropout < 1.0:
            raise FieldError("label_dropout", f"must be in [0, 1), got {self.label_dropout}")
        if not 8 <= self.text_width <= 4096 or self.text_width % 4:
            raise FieldError("text_width", f"must be a multiple of 4 in [8, 4096], got {self.text_width}")
        if not 0 <= self.text_layers <= 48:
            raise FieldError("text_layers", f"must be in [0, 48], got {self.text_layers}")
        if not 1 <= self.vlb_timesteps <= self.timesteps:
            raise FieldError("vlb_timesteps", f"must be in [1, timesteps={self.timesteps}], got {self.vlb_timesteps}")
        if self.time_sampling != "uniform" and self.objective != "flow":
            raise FieldError("time_sampling", f"{self.time_sampling!r} is for the flow objective; ddpm samples "
                             f"its timesteps uniformly")


@dataclass(kw_only=True)
class DiffusionSampleOptions(SampleOptions):
    """``sampler``: ddpm, ddim, dpm++ (ddpm objective) or euler (flow); None = dpm++ / euler.
    ``steps``: model evaluations per sample (≤ T). ``eta``: DDIM noise (0 = deterministic).
    ``guidance``: classifier-free guidance w (0 unconditional, 1 conditional, > 1 guided); None = 1 for a
    conditional model; an unconditional model takes none. ``negative_prompt`` (text-to-image): the
    caption guidance steers away from, in place of the empty caption."""

    sampler: str | None = None
    steps: int = 20
    eta: float = 0.0
    guidance: float | None = None
    negative_prompt: str | None = None  # prompted: what the unconditional pass of guidance is conditioned on

    def __post_init__(self) -> None:
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise FieldError("sampler", f"must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.steps < 1:
            raise FieldError("steps", f"must be >= 1, got {self.steps}")
        if not 0.0 <= self.eta <= 1.0:
            raise FieldError("eta", f"must be in [0, 1], got {self.eta}")
        if self.guidance is not None and not 0.0 <= self.guidance <= 100.0:
            raise FieldError("guidance", f"must be in [0, 100], got {self.guidance}")

    def model_evaluations(self) -> int:
        return self.steps
