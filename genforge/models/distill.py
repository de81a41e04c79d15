"""Few-step students distilled from a trained flow-matching diffusion run (the ``teacher`` parent).

The student is the teacher's U-Net (initialised from the teacher run's weights, which are its EMA weights)
plus a step-size embedding: fed the number of steps k it is asked to take, it predicts the velocity of one
Euler step of size 1/k on the uniform grid sigma_i = 1 - i/k. Sampling is k Euler steps, one U-Net call
each; the teacher's classifier-free guidance is distilled in (the targets come from the guided teacher), so a
step costs one forward where the teacher's costs two. ``model.method``:

- ``trajectory`` (default): multi-step trajectory distillation. The guided teacher integrates its ODE from
  noise z over ``teacher_steps`` uniform Euler steps; its states at the grid points of every trained k are
  kept. The student at x_{sigma_i} (a teacher state), fed k, regresses the secant velocity
  k · (x_{sigma_i} - x_{sigma_{i+1}}), so its k-step Euler path lands on the teacher's trajectory at each of
  its own grid points. k = 1 is knowledge distillation (Luhman & Luhman 2021); several k in one network,
  told k by an embedding, follow shortcut models (Frans et al. 2024); the targets are what progressive
  distillation (Salimans & Ho 2022) would reach round by round, taken from the teacher directly.
- ``reflow``: rectified flow's reflow (Liu et al. 2023): the same (z, teacher sample) pairs, the student
  trained on their straight interpolations x_s = (1 - s) x + s z with target z - x, s ~ U(0, 1).

Teacher targets cost ``teacher_steps`` guided teacher calls per trajectory, so they are made as training
goes: each step rolls out ``fresh`` new trajectories (labels from the batch, noise from the global RNG) into
a pool of the latest ``pool`` ones, and the student's batch is drawn from the pool. Only the student's
weights are saved; the pool lives in memory. Shape legend: B batch, P pool, M = max k, C channels, S side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genforge.config import ConfigError, FieldError
from genforge.models import rng
from genforge.models.base import (Batch, GenerativeModel, ImageModelConfig, SampleOptions, eval_mode, labels_for,
                                  unpack_image_batch)
from genforge.models.capabilities import ImageModel
from genforge.models.unet import UNet, timestep_embedding

ARCHITECTURE = ("channels", "image_size", "conditional", "num_classes", "width", "max_mult", "blocks", "attention",
                "timesteps")


@dataclass(kw_only=True)
class DistillConfig(ImageModelConfig):
    """The student: the teacher's U-Net shape (checked against the teacher run) and how it is distilled."""

    family: str = "diffusion-distill"
    width: int = 32  # the U-Net fields must equal the teacher's
    max_mult: int = 4
    blocks: int = 1
    attention: bool = True
    timesteps: int = 1000  # T of the teacher's flow schedule (time is fed as sigma · T)
    steps: list[int] = field(default_factory=lambda: [1, 2, 4, 8])  # the step counts k it is trained for
    method: Literal["trajectory", "reflow"] = "trajectory"
    guidance: float = 2.0  # the teacher's classifier-free guidance w distilled in (conditional teachers)
    teacher_steps: int = 16  # uniform Euler steps of the teacher's trajectories (a multiple of every k)
    fresh: int = 8  # teacher trajectories rolled out per training step
    pool: int = 4096  # the latest trajectories kept to draw batches from

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family != "diffusion-distill":
            raise FieldError("family", f"must be 'diffusion-distill' for a DistillConfig, got {self.family!r}")
        for name in ("width", "max_mult", "blocks"):
            if not 1 <= getattr(self, name) <= 4096:
                raise FieldError(name, f"must be in [1, 4096], got {getattr(self, name)}")
        if not self.steps or any(not 1 <= k <= 64 for k in self.steps) or len(set(self.steps)) != len(self.steps):
            raise FieldError("steps", f"must be distinct step counts in [1, 64], got {self.steps}")
        if any(self.teacher_steps % k for k in self.steps):
            raise FieldError("teacher_steps", f"must be a multiple of every trained step count {self.steps}, "
                                              f"got {self.teacher_steps}")
        if not 0.0 <= self.guidance <= 100.0:
            raise FieldError("guidance", f"must be in [0, 100], got {self.guidance}")
        if not 1 <= self.fresh <= self.pool:
            raise FieldError("fresh", f"must be in [1, pool={self.pool}], got {self.fresh}")

    @property
    def grid(self) -> int:
        """M: the pool keeps the teacher's states at sigma = 1 - j/M, j = 0..M (every trained k divides M)."""
        return math.lcm(*self.steps)


@dataclass(kw_only=True)
class DistillSampleOptions(SampleOptions):
    """``steps``: Euler steps of the student, 1 to its largest trained step count (one U-Net call each); a count
    between the trained ones is fed to the step-size embedding as it is (sinusoidal of T/k: between theirs)."""

    steps: int = 1

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise FieldError("steps", f"must be >= 1, got {self.steps}")

    def model_evaluations(self) -> int:
        return self.steps


class StepUNet(UNet):
    """The teacher's U-Net plus an embedding of the step count k (sinusoidal of T/k, the step size in
    timesteps, then a zero-initialised MLP: before training the student is exactly the teacher).
    (x [B, C, S, S], t float [B], labels [B] or None, k float [B]) → velocity [B, C, S, S]."""

    def __init__(self, *args: Any, timesteps: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        emb = 4 * self.width
        self.timesteps = timesteps
        self.step_size = nn.Sequential(nn.Linear(self.width, emb), nn.SiLU(), nn.Linear(emb, emb))
        nn.init.zeros_(self.step_size[2].weight)
        nn.init.zeros_(self.step_size[2].bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, k: Tensor | None = None) -> Tensor:
        """The U-Net's forward with the step-size embedding of ``k`` [B] (steps to take) added to ``emb``."""
        emb = self.embed(t, y)
        if k is not None:
            emb = emb + self.step_size(timestep_embedding(self.timesteps / k.float(), self.width))
        return self.trunk(x, emb)


class DiffusionDistill(GenerativeModel, ImageModel):
    """A k-step student of a flow-matching ``teacher`` run; one parameter group ``loss``."""

    config_class: ClassVar[type[DistillConfig]] = DistillConfig
    family: ClassVar[str] = "diffusion-distill"
    sample_options: ClassVar[type[DistillSampleOptions]] = DistillSampleOptions
    parent_roles: ClassVar[tuple[str, ...]] = ("teacher",)

    def __init__(self, config: DistillConfig) -> None:
        super().__init__(config)
        config.check_complete()
        self.config: DistillConfig = config
        self.unet = StepUNet(config.channels, config.image_size, width=config.width, blocks=config.blocks,
                             max_mult=config.max_mult, attention=config.attention, num_classes=self.num_classes,
                             timesteps=config.timesteps)
        self.__dict__["_pool"] = None  # (states [P, M+1, C, S, S], labels [P] or None): teacher targets, not saved

    def attach_parents(self, parents: dict[str, GenerativeModel]) -> None:
        """Stand on the teacher: a flow-matching ``diffusion`` run with this U-Net shape; the student's U-Net
        starts from the teacher's weights (the step-size embedding from zero). Loading a saved student then
        overwrites them with its own."""
        super().attach_parents(parents)
        teacher = parents["teacher"]
        tc = teacher.config
        if teacher.family != "diffusion" or tc.objective != "flow":
            raise ConfigError(f"parents.teacher must be a flow-matching diffusion run (model.objective=flow), got "
                              f"family {teacher.family!r}" + (f" objective {tc.objective!r}"
                                                             if teacher.family == "diffusion" else ""),
                              key="parents.teacher")
        if tc.backbone != "unet":
            raise ConfigError(f"distilling a {tc.backbone!r} teacher is not supported: the student is a U-Net",
                              key="parents.teacher")
        if tc.prompted:
            raise ConfigError("distilling a text-to-image teacher (model.prompted) is not supported yet: the student "
                              "has no caption encoder", key="parents.teacher")
        for name in ARCHITECTURE:
            if getattr(tc, name) != getattr(self.config, name):
                raise ConfigError(f"model.{name} is {getattr(self.config, name)!r} but the teacher run's is "
                                  f"{getattr(tc, name)!r}: the student copies the teacher's U-Net",
                                  key=f"model.{name}")
        if tc.dropout:
            raise ConfigError("the teacher's U-Net has dropout; the student has none", key="parents.teacher")
        missing, unexpected = self.unet.load_state_dict(teacher.unet.state_dict(), strict=False)
        if unexpected or any(not m.startswith("step_size.") for m in missing):
            raise ValueError(f"the teacher's U-Net does not match the student's: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")

    @property
    def teacher(self) -> GenerativeModel:
        return self.parents["teacher"]

    # ---- teacher targets
    @torch.no_grad()
    def rollout(self, z: Tensor, y: Tensor | None) -> Tensor:
        """The guided teacher's uniform Euler trajectories from noise z [B, C, S, S] (labels y [B] or None),
        at sigma = 1 - j/M, j = 0..M → float32 [B, M+1, C, S, S] (index 0 is z, M the sample)."""
        cfg, teacher = self.config, self.teacher
        g = cfg.teacher_steps
        every = g // cfg.grid  # every k divides teacher_steps (checked by the config), so their lcm M does too
        guidance = cfg.guidance if y is not None else 1.0
        x, states = z, [z]
        n = z.shape[0]
        with eval_mode(teacher.unet):
            for i in range(g):
                sigma = 1.0 - i / g
                fed = torch.full((n,), sigma * cfg.timesteps, device=z.device)
                x = x - (1.0 / g) * teacher._guided(x, fed, y, guidance)  # the teacher's own guided velocity
                if (i + 1) % every == 0:
                    states.append(x)
        return torch.stack(states, dim=1).float()

    def _grow_pool(self, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Roll out ``fresh`` new trajectories (labels: the batch's first ones) and keep the latest ``pool``."""
        cfg = self.config
        n = cfg.fresh if y is None else min(cfg.fresh, y.shape[0])
        y_new = None if y is None else y[:n]
        z = rng.train_randn((n, *self.image_shape), self.device)
        new = self.rollout(z, y_new)
        pool = self.__dict__["_pool"]
        if pool is not None and pool[0].shape[1:] == new.shape[1:] and pool[0].device == new.device:
            states = torch.cat([pool[0], new])[-cfg.pool:]
            labels = None if y_new is None else torch.cat([pool[1], y_new])[-cfg.pool:]
        else:
            states, labels = new, y_new
        self.__dict__["_pool"] = (states, labels)
        return states, labels

    def pool_size(self) -> int:
        """How many teacher trajectories the pool holds (0 before the first training step)."""
        pool = self.__dict__["_pool"]
        return 0 if pool is None else pool[0].shape[0]

    # ---- training
    def losses(self, batch: Batch, *, groups: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """MSE between the student's velocity and the teacher's (see the module docstring): in training on B
        draws from the pool (which first grows by ``fresh`` trajectories), in eval mode on B fresh trajectories
        (a held-out loss that leaves the pool alone, so it depends only on the global seed)."""
        if groups is not None and set(groups) - {"loss"}:
            raise ValueError(f"unknown loss groups {sorted(set(groups) - {'loss'})}; the {self.family} family "
                             f"has ['loss']")
        x, y = unpack_image_batch(batch, self.config, self.device, self.family)
        b, dev, cfg = x.shape[0], self.device, self.config
        if self.training:
            states, labels = self._grow_pool(y)
            idx = rng.train_randint(0, states.shape[0], (b,), dev)
        else:  # held out: B fresh trajectories, one per example, and the pool left alone
            states, labels = self.rollout(rng.train_randn((b, *self.image_shape), dev), y), y
            idx = torch.arange(b, device=dev)
        ks = torch.tensor(cfg.steps, device=dev)[rng.train_randint(0, len(cfg.steps), (b,), dev)]  # [B]
        path = states[idx]  # [B, M+1, C, S, S]
        rows = torch.arange(b, device=dev)
        if cfg.method == "trajectory":
            i = (rng.train_rand((b,), dev) * ks).long().clamp(max=ks - 1)  # step index in [0, k)
            stride = cfg.grid // ks
            x_t, x_next = path[rows, i * stride], path[rows, (i + 1) * stride]
            sigma = 1.0 - i.float() / ks
            target = (x_t - x_next) * ks.float().view(-1, 1, 1, 1)
        else:
            sigma = rng.train_rand((b,), dev)
            z, end = path[:, 0], path[:, -1]
            s = sigma.view(-1, 1, 1, 1)
            x_t, target = (1 - s) * end + s * z, z - end
        out = self.unet(x_t, sigma * cfg.timesteps, None if labels is None else labels[idx], ks)
        return {"loss": F.mse_loss(out.float(), target.float())}

    # ---- sampling
    def parse_sample_options(self, options: Any = None) -> DistillSampleOptions:
        opts = super().parse_sample_options(options)
        top = max(self.config.steps)
        if opts.steps > top:
            raise ConfigError(f"invalid value: sample.steps: must be <= {top}, the most steps this student was "
                              f"trained for (it was trained for {sorted(self.config.steps)}), got {opts.steps}",
                              key="sample.steps")
        return opts

    @torch.no_grad()
    def sample(self, n: int, *, condition: Any = None, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """Draw ``n`` images float32 [n, C, S, S] in [0, 1] in ``steps`` Euler steps (one U-Net call each).

        Args:
            condition: None (random labels when conditional), an int, or n labels.
            generator: CPU RNG for the labels and the initial noise.
            options: :class:`DistillSampleOptions`.
        """
        opts = self.parse_sample_options(options)
        if n < 1:
            raise FieldError("n", f"must be >= 1, got {n}")
        y = labels_for(n, condition, self.num_classes, self.device, generator)
        x = rng.randn((n, *self.image_shape), generator).to(self.device)  # noise [n, C, S, S]
        k = opts.steps
        ks = torch.full((n,), float(k), device=self.device)
        with eval_mode(self.unet):
            for i in range(k):
                fed = torch.full((n,), (1.0 - i / k) * self.config.timesteps, device=self.device)
                x = x - (1.0 / k) * self.unet(x, fed, y, ks)
        return ((x.float() + 1) / 2).clamp_(0, 1)
