"""Training evaluator classifiers: the recipe, the presets of the built-in datasets, the training loop.

:func:`train_evaluator` turns labelled images into an
:class:`~genforge.evaluation.features.classifier.EvaluatorClassifier`; writing,
indexing, finding and caching the result is
:mod:`genforge.evaluation.features.evaluators`.

Reproducibility: :func:`train_evaluator` seeds initialisation, data order,
augmentation and dropout from ``EvaluatorTrainConfig.seed``, turns on
``torch.use_deterministic_algorithms`` and pins ``torch.set_num_threads`` to
``num_threads`` (restoring all three afterwards). On one machine and torch build
the weights are then bit-identical run after run. They do depend on the thread
count (one and two threads give different weights), so builds pin **one** thread
by default: every machine has it, and on a busy two-core CPU one thread also
trains several times faster than two. Another CPU instruction set (``cpu_capability``
in the index) or torch version can round differently, which is why the shipped
weights, not the recipe, define the metric.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from genforge.config import lr_factor
from genforge.data import BatchStream, ImageData
from genforge.evaluation.features.classifier import ClassifierConfig, EvaluatorClassifier
from genforge.evaluation.progress import log

__all__ = [
    "PRESETS",
    "RECIPE_VERSION",
    "EvaluatorError",
    "EvaluatorTrainConfig",
    "accuracy",
    "require_labels",
    "train_evaluator",
]

RECIPE_VERSION = 2  # bump when the training code changes what a config produces (invalidates on-demand caches)
# 2: random rotation and scaling besides the shifts


class EvaluatorError(RuntimeError):
    """No evaluator for a dataset, a corrupt or modified weights file, or data that cannot have one."""


# --------------------------------------------------------------------------- recipe


@dataclass(kw_only=True)
class EvaluatorTrainConfig:
    """How an evaluator is trained: AdamW, linear warm-up then cosine decay, random affine augmentation
    (shift, rotation, scale; edge pixels extended), the accuracy measured on the held-out test split.

    Steps: ``ceil(epochs * N / batch_size)`` clamped to ``[min_steps, max_steps]``,
    so small image folders train briefly and MNIST sees ``epochs`` passes.
    """

    seed: int = 0
    batch_size: int = 128  # lowered to N for smaller data
    epochs: float = 5.0
    min_steps: int = 300
    max_steps: int = 5000
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    shift: int = -1  # max random shift in pixels (edge-replicated); -1 = image_size // 14 (28 px: 2)
    rotate: float = 10.0  # max random rotation in degrees (0 = none)
    scale: float = 0.1  # random zoom in [1 - scale, 1 + scale] (0 = none)
    num_threads: int = 1  # torch intra-op threads pinned while training (results depend on it; see module doc)
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        for name in ("batch_size", "min_steps", "max_steps", "num_threads", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) must be <= max_steps ({self.max_steps})")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.shift < -1:
            raise ValueError(f"shift must be >= 0 (or -1 for automatic), got {self.shift}")
        if not 0.0 <= self.rotate <= 180.0:
            raise ValueError(f"rotate must be in [0, 180] degrees, got {self.rotate}")
        if not 0.0 <= self.scale < 1.0:
            raise ValueError(f"scale must be in [0, 1), got {self.scale}")

    def steps_for(self, n: int) -> int:
        """Optimizer steps for ``n`` training images."""
        per_epoch = n / min(self.batch_size, n)
        return min(self.max_steps, max(self.min_steps, math.ceil(self.epochs * per_epoch)))

    def shift_for(self, image_size: int) -> int:
        return image_size // 14 if self.shift < 0 else self.shift


# The built-in datasets' recipes (used by `genforge evaluators build NAME`).
PRESETS: dict[str, EvaluatorTrainConfig] = {
    # 1617 images: 506 steps, shifts only (as the shipped file was built; 98.9% test accuracy)
    "digits": EvaluatorTrainConfig(epochs=40.0, rotate=0.0, scale=0.0),
    # 9375 steps with shifts, rotations and zoom: 99.51% test accuracy (8 epochs: 99.27%; 20 epochs of shifts
    # only: 99.48%), about 6 CPU minutes on one thread
    "mnist": EvaluatorTrainConfig(epochs=20.0, max_steps=20000),
    "fashion-mnist": EvaluatorTrainConfig(epochs=20.0, max_steps=20000),
    # 6710 drawings, the vendor as the label: 1049 steps (the default 5 epochs, 300 steps: 87.6% held-out)
    "emoji-styles": EvaluatorTrainConfig(epochs=20.0),
}


# --------------------------------------------------------------------------- training


@contextmanager
def _reproducible(seed: int, num_threads: int) -> Iterator[None]:
    """Seed the global RNG (dropout) and pin threads + deterministic algorithms; restore all on exit."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(num_threads)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
            torch.set_num_threads(threads)


def _random_shift(x: Tensor, shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image by its own offset in ``[-shift, shift]²``, replicating the edge pixels.

    Args:
        x: ``[B, C, H, W]`` (any dtype).

    Returns:
        ``[B, C, H, W]``, same dtype.
    """
    if shift == 0:
        return x
    b, _, h, w = x.shape
    dy, dx = torch.randint(-shift, shift + 1, (2, b, 1), generator=generator)
    rows = (torch.arange(h) + dy).clamp_(0, h - 1)                             # (B, H)
    cols = (torch.arange(w) + dx).clamp_(0, w - 1)                             # (B, W)
    out = x[torch.arange(b)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def _random_affine(x: Tensor, shift: int, rotate: float, scale: float, generator: torch.Generator) -> Tensor:
    """Shift (whole pixels), rotate and zoom each image by its own random amounts, bilinear, extending the edge
    pixels: uint8 [B, C, H, W] → float [B, C, H, W] in [0, 1]. Without rotation and zoom it is the pure shift."""
    if rotate == 0 and scale == 0:
        return _random_shift(x, shift, generator).float() / 255
    b, _, h, w = x.shape
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(rotate)  # [B]
    zoom = 1 + (torch.rand(b, generator=generator) * 2 - 1) * scale  # [B]
    d = torch.randint(-shift, shift + 1, (2, b), generator=generator).float()  # [2, B] pixels
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, -2 * d[1] / w], 1),
                         torch.stack([sin, cos, -2 * d[0] / h], 1)], 1)  # [B, 2, 3] output → input coordinates
    grid = F.affine_grid(theta, [b, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x.float() / 255, grid, mode="bilinear", padding_mode="border", align_corners=False)


def accuracy(net: EvaluatorClassifier, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``net`` on uint8 images ``x`` and labels ``y`` (eval mode)."""
    logits, _ = net.extract(x, batch_size=batch_size)
    return float((logits.argmax(1) == y).double().mean()) if len(y) else float("nan")


def train_evaluator(data: ImageData, config: EvaluatorTrainConfig | None = None, *,
                    network: ClassifierConfig | None = None, progress: bool = False,
                    name: str = "") -> tuple[EvaluatorClassifier, dict[str, Any]]:
    """Train an evaluator on ``data.train_x/train_y`` and measure it on the test split.

    Args:
        data: labelled images (uint8 ``[N, C, S, S]``, at least 2 classes).
        config: the recipe; default :class:`EvaluatorTrainConfig`.
        network: default ``ClassifierConfig`` with the data's channels, size and classes.
        progress: print a few progress lines to stderr.
        name: names the dataset in progress lines.

    After the last step the features are rescaled to unit mean variance over the
    training images (``feature_scale`` in the report; logits are unchanged).

    Returns:
        ``(net in eval mode, report)`` with ``test_accuracy``, ``steps``, ``seconds``,
        ``feature_scale``, ``train_examples``, ``test_examples``.
    """
    config = config or EvaluatorTrainConfig()
    require_labels(data)
    network = network or ClassifierConfig(channels=data.channels, image_size=data.image_size,
                                          num_classes=data.num_classes)
    n = data.train_x.shape[0]
    steps, batch = config.steps_for(n), min(config.batch_size, n)
    shift, warmup = config.shift_for(data.image_size), max(1, round(config.warmup_fraction * steps))
    t0 = time.perf_counter()
    with _reproducible(config.seed, config.num_threads):
        net = EvaluatorClassifier(network)  # init from the seeded global RNG
        stream = BatchStream(data.train_x, data.train_y, batch, seed=config.seed)
        augment = torch.Generator().manual_seed(config.seed + 1)
        opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        net.train()
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = config.lr * lr_factor(step, max_steps=steps, warmup_steps=warmup, schedule="cosine",
                                                    min_lr_ratio=0.0)
            b = next(stream)
            logits, _ = net(_random_affine(b["x"], shift, config.rotate, config.scale, augment))
            loss = F.cross_entropy(logits, b["y"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress and (step + 1) % max(1, steps // 10) == 0:
                log(True, f"evaluator {name or data.name}: step {step + 1}/{steps}, loss {loss.item():.4f}, "
                          f"{time.perf_counter() - t0:.0f} s", prefix="")
        net.eval()
        _, features = net.extract(data.train_x, batch_size=config.eval_batch_size)
        scale = float(features.double().var(0).mean().rsqrt())
        net.rescale_features(scale)  # unit mean feature variance on the training set; logits unchanged
        acc = accuracy(net, data.test_x, data.test_y, config.eval_batch_size)
    seconds = time.perf_counter() - t0
    log(progress, f"evaluator {name or data.name}: test accuracy {acc:.4%} on {len(data.test_y)} images "
                  f"({steps} steps, {seconds:.0f} s)", prefix="")
    return net, {"test_accuracy": acc, "steps": steps, "seconds": round(seconds, 1), "feature_scale": scale,
                 "train_examples": n, "test_examples": int(data.test_x.shape[0])}


def require_labels(data: ImageData) -> None:
    """Raise :class:`EvaluatorError` unless ``data`` has labels of at least 2 classes (suggesting Inception)."""
    if not data.labelled:
        raise EvaluatorError(f"dataset {data.name!r} has no labels: classifier features need labelled data "
                             f"(put the images in one sub-folder per class), or use --features inception")
    if data.num_classes < 2:
        raise EvaluatorError(f"dataset {data.name!r} has {data.num_classes} class; an evaluator classifier "
                             f"needs at least 2 (one sub-folder per class), or use --features inception")
