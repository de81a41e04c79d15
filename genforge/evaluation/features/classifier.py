"""The evaluator classifier: a small CNN whose features and logits the image metrics use.

For each labelled dataset genforge trains one of these (``genforge.evaluation.features.evaluators``)
and measures generated images in its feature space, as is the accepted practice for
MNIST-like data where Inception-v3 features mean little:

- FID, KID, precision/recall and density/coverage use ``features``: the output of
  the penultimate linear layer taken **before** its ReLU. After the ReLU many
  units are exactly zero on most images, so the feature covariance would be
  singular; before it every unit varies.
- The classifier Inception Score and mode coverage use ``logits``.

Network (``S`` = image side, ``w`` = ``widths``, ``F`` = ``feature_dim``, ``K`` = classes)::

    x uint8/float [N, C, S, S] → float in [0, 1] → (x - 0.5) / 0.5
    conv 5×5 C→w0, stride 2 (1 when S < 16), ReLU     [N, w0, S/2, S/2]
    conv 3×3 w0→w1, stride 2, ReLU                    [N, w1, S/4, S/4]
    conv 3×3 w1→w2, stride 2, ReLU                    [N, w2, S/8, S/8]   (28 → 14 → 7 → 4)
    adaptive average pool to P×P, P = min(4, side)    [N, w2 * P * P]
    fc1 → features                                    [N, F]   (pre-activation, unit mean variance)
    ReLU, dropout, head → logits                      [N, K]

After training, ``fc1`` and ``head`` are rescaled (:meth:`EvaluatorClassifier.rescale_features`)
so the features have unit mean variance on the training images; the logits do not change.

Strided convolutions without BatchNorm keep inference at about 2.5 M multiply-adds
per 28×28 image, so 20,000 MNIST images take a couple of seconds on two CPU cores;
inputs and weights use the channels-last layout, which is faster on CPU here.

Layer rule: imports only torch, the standard library and ``genforge.config``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genforge.models.base import eval_mode

from genforge.config import from_dict, to_dict

__all__ = ["ClassifierConfig", "EvaluatorClassifier"]


@dataclass(kw_only=True)
class ClassifierConfig:
    """Shape and size of an :class:`EvaluatorClassifier`; stored with its weights.

    Attributes:
        channels: input channels C (1, 3 or 4).
        image_size: input side S in pixels (square images, S >= 8).
        num_classes: K, at least 2.
        widths: output channels of the three convolutions.
        feature_dim: F, width of the penultimate (feature) layer.
        dropout: dropout before the head while training (no effect in eval mode).
    """

    channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    widths: tuple[int, int, int] = (32, 64, 128)
    feature_dim: int = 128
    dropout: float = 0.3

    def __post_init__(self) -> None:
        self.widths = tuple(self.widths)
        if self.channels not in (1, 3, 4):
            raise ValueError(f"channels must be 1, 3 or 4, got {self.channels}")
        if not 8 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [8, 1024], got {self.image_size}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (a classifier needs two classes), got {self.num_classes}")
        if len(self.widths) != 3 or any(w < 1 for w in self.widths):
            raise ValueError(f"widths must be three positive ints, got {list(self.widths)}")
        if self.feature_dim < 2:
            raise ValueError(f"feature_dim must be >= 2, got {self.feature_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def stem_stride(self) -> int:
        """Stride of the first convolution: 2, or 1 for images smaller than 16×16."""
        return 1 if self.image_size < 16 else 2

    @property
    def pool_size(self) -> int:
        """P: side of the pooled map, ``min(4, side after the three convolutions)``."""
        side = math.ceil(self.image_size / self.stem_stride)
        side = math.ceil(math.ceil(side / 2) / 2)
        return min(4, side)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): equal configs give equal strings."""
        return json.dumps(to_dict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ClassifierConfig:
        """Strict inverse of :meth:`to_json` (unknown keys or wrong types raise ``ConfigError``)."""
        return from_dict(cls, json.loads(text))


class EvaluatorClassifier(nn.Module):
    """The small CNN of the module docstring.

    ``forward`` takes images as uint8 in 0..255 or float in ``[0, 1]`` and
    normalises them inside, so callers pass dataset tensors or model samples
    as they are. Float input is rounded to 256 levels by default (``quantize``),
    so generated images are seen exactly as the 8-bit real images are.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        c, (w0, w1, w2), p = config.channels, config.widths, config.pool_size
        self.conv1 = nn.Conv2d(c, w0, 5, stride=config.stem_stride, padding=2)
        self.conv2 = nn.Conv2d(w0, w1, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(w1, w2, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(p)
        self.fc1 = nn.Linear(w2 * p * p, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    @torch.no_grad()
    def rescale_features(self, scale: float) -> None:
        """Multiply the features by ``scale > 0`` while leaving the logits unchanged.

        ``fc1`` is scaled by ``scale`` and ``head``'s weights by ``1 / scale``; since
        ``relu(s * z) = s * relu(z)`` for ``s > 0``, the logits stay the same (up to
        rounding). Builds use it to give the features unit mean variance on the
        training set, which puts FID on a dataset-independent scale and keeps KID's
        cubic kernel ``(x . y / F + 1) ** 3`` in its intended range.
        """
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.fc1.weight.mul_(scale)
        self.fc1.bias.mul_(scale)
        self.head.weight.div_(scale)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def normalise(self, images: Tensor, *, quantize: bool = True) -> Tensor:
        """Check shape and range; uint8 0..255 or float [0, 1] → float32 in [-1, 1], channels-last.

        Raises:
            ValueError: wrong shape (names the expected one), wrong dtype, or float
                values outside ``[0, 1]`` (NaN included).
        """
        cfg = self.config
        s = cfg.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (cfg.channels, s, s):
            raise ValueError(f"this evaluator takes images of shape [N, {cfg.channels}, {s}, {s}], "
                             f"got {list(images.shape)}; resize or convert them to the evaluator's shape first")
        if images.dtype == torch.uint8:
            x = images.to(torch.float32).div_(255.0)                          # (N, C, S, S) in [0, 1]
        elif images.is_floating_point():
            if images.numel():
                lo, hi = torch.aminmax(images.detach())
                if not (lo >= 0 and hi <= 1):  # also catches NaN
                    raise ValueError(f"float images must lie in [0, 1], got min {lo.item():.4g}, max {hi.item():.4g}; "
                                     f"map [-1, 1] images with (x + 1) / 2, or pass uint8")
            x = images.to(torch.float32)
            if quantize:
                x = x.mul(255.0).round_().div_(255.0)
        else:
            raise ValueError(f"images must be uint8 or floating point, got {images.dtype}")
        return x.sub_(0.5).mul_(2.0).contiguous(memory_format=torch.channels_last)

    def forward(self, images: Tensor, *, quantize: bool = True) -> tuple[Tensor, Tensor]:
        """Images → ``(logits, features)``.

        Args:
            images: uint8 ``[N, C, S, S]`` in 0..255 or float in ``[0, 1]`` (C, S of the config).
            quantize: round float images to 8-bit levels first (ignored for uint8).

        Returns:
            logits float32 ``[N, K]`` and features float32 ``[N, F]`` (before the ReLU).
        """
        x = self.normalise(images, quantize=quantize)                          # (N, C, S, S)
        x = F.relu(self.conv1(x))                                              # (N, w0, S/2, S/2)
        x = F.relu(self.conv2(x))                                              # (N, w1, S/4, S/4)
        x = F.relu(self.conv3(x))                                              # (N, w2, S/8, S/8)
        x = self.pool(x).flatten(1)                                            # (N, w2*P*P)
        features = self.fc1(x)                                                 # (N, F)
        h = F.dropout(F.relu(features), self.config.dropout, self.training)
        return self.head(h), features                                          # (N, K), (N, F)

    @torch.inference_mode()
    def extract(self, images: Tensor, *, batch_size: int = 1000, quantize: bool = True) -> tuple[Tensor, Tensor]:
        """:meth:`forward` over a large set in chunks, in eval mode and ``inference_mode``.

        ``images`` may live on any device; each chunk moves to this module's device.
        The module's train/eval mode is restored afterwards.

        Returns:
            logits float32 ``[N, K]`` and features float32 ``[N, F]``, on the CPU.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = self.head.weight.device
        with eval_mode(self):
            outs = [self(chunk.to(device), quantize=quantize) for chunk in images.split(batch_size)]
        if not outs:
            self.normalise(images)  # shape check even for N = 0
            return torch.empty(0, self.config.num_classes), torch.empty(0, self.config.feature_dim)
        return torch.cat([o[0].cpu() for o in outs]), torch.cat([o[1].cpu() for o in outs])
