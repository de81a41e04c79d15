"""Blocks shared by the convolutional families (GAN, VAE).

Every image family here works on square images of any side in [4, 1024].
:func:`plan_resolution` decides how many stride-2 stages separate the image
from the lowest-resolution feature map; :class:`ConvEncoder` (discriminator,
VAE encoder) walks down that plan with ``Conv(4, 2, 1)`` stages and
:class:`ConvDecoder` (generator, VAE decoder) walks up it with
``ConvTranspose(4, 2, 1)`` stages and crops to the exact image size.

Shape legend: B batch, C image channels, S image side, b base side,
F features, K classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

from genforge.config import FieldError

import torch.nn.functional as F
from torch import Tensor, nn

Norm = Literal["batch", "group", "spectral", "none"]
Upsample = Literal["deconv", "resize"]

MAX_STAGES = 6  # 1024 px → base 16 after 6 stages; deeper nets are not worth it here
MIN_BASE = 4  # the lowest-resolution feature map is at least 4×4


@dataclass(frozen=True)
class ResolutionPlan:
    """How an image of side ``image_size`` maps onto a pyramid of feature maps.

    The decoder starts from ``base``×``base`` and doubles ``stages`` times to
    ``padded`` = base·2**stages ≥ image_size, then center-crops; the encoder
    halves ``stages`` times (floor) from ``image_size`` down to ``encoded``.
    Sizes that are base·2**stages exactly (8, 16, 28, 32, 64, …) need no crop.
    """

    image_size: int
    base: int
    stages: int

    @property
    def padded(self) -> int:
        return self.base * 2 ** self.stages

    @property
    def encoded(self) -> int:
        """Side of the encoder's last feature map (each Conv(4, 2, 1) floors S/2)."""
        s = self.image_size
        for _ in range(self.stages):
            s //= 2
        return s


def plan_resolution(image_size: int, max_stages: int = MAX_STAGES) -> ResolutionPlan:
    """Choose ``stages`` = ⌊log2(S / 4)⌋ (capped) and ``base`` = ⌈S / 2**stages⌉.

    Examples: 28 → base 7, 2 stages; 16 → 4, 2; 32 → 4, 3; 64 → 4, 4;
    27 → base 7, 2 stages (decoded at 28, cropped to 27); 5 → base 5, 0 stages.

    Raises:
        ValueError: ``image_size`` < 4.
    """
    if image_size < MIN_BASE:
        raise FieldError("image_size", f"must be >= {MIN_BASE}, got {image_size}")
    stages = 0
    while stages < max_stages and image_size >= MIN_BASE * 2 ** (stages + 1):
        stages += 1
    base = math.ceil(image_size / 2 ** stages)
    return ResolutionPlan(image_size=image_size, base=base, stages=stages)


def stage_widths(width: int, stages: int, max_width: int) -> list[int]:
    """Channels per stage from the highest resolution down: width·2**i, capped.

    At least one entry (a 0-stage plan still has one feature map).
    """
    return [min(width * 2 ** i, max_width) for i in range(max(stages, 1))]


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm over ``channels`` in gcd(channels, 8) groups (8 where the width allows): the norm of the
    U-Net, the autoencoder, cross-attention and the contrastive evaluator, independent of the batch."""
    return nn.GroupNorm(math.gcd(channels, 8), channels)


def center_crop(x: Tensor, size: int) -> Tensor:
    """[B, C, S', S'] → [B, C, size, size] (no-op when S' == size)."""
    s = x.shape[-1]
    if s == size:
        return x
    o = (s - size) // 2
    return x[..., o:o + size, o:o + size]


def one_hot_maps(y: Tensor, num_classes: int, size: int) -> Tensor:
    """int64 [B] (or class weights float [B, K]) → float [B, K, size, size] constant planes."""
    return label_vectors(y, num_classes)[:, :, None, None].expand(-1, -1, size, size)


def label_vectors(y: Tensor, num_classes: int) -> Tensor:
    """Labels as class weights: int64 [B] → one-hot float [B, K]; float [B, K] (soft labels) unchanged."""
    if y.is_floating_point():
        if y.ndim != 2 or y.shape[1] != num_classes:
            raise ValueError(f"class weights must be [B, {num_classes}], got {list(y.shape)}")
        return y
    return F.one_hot(y, num_classes).float()


def embed_labels(embedding: nn.Embedding, y: Tensor) -> Tensor:
    """``embedding(y)`` for int64 labels [B]; the weighted mix of rows for class weights float [B, K] → [B, D]."""
    if y.is_floating_point():
        return y.to(embedding.weight.dtype) @ embedding.weight[: y.shape[1]]
    return embedding(y)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without its own affine, then a per-class gain and bias (de Vries et al. 2017)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, h: Tensor, y: Tensor) -> Tensor:
        """h [B, F, s, s], y int64 [B] (or class weights [B, K]) → [B, F, s, s]."""
        gain, bias = embed_labels(self.gain, y), embed_labels(self.bias, y)  # [B, F] each
        return self.bn(h) * gain[:, :, None, None] + bias[:, :, None, None]


def make_norm(kind: Norm, channels: int, num_classes: int = 0) -> nn.Module:
    """A 2-d normalization layer; ``spectral`` and ``none`` give an identity here
    (spectral normalization wraps the weights instead, see :func:`spectral_norm_`)."""
    if kind == "batch":
        return ConditionalBatchNorm2d(channels, num_classes) if num_classes else nn.BatchNorm2d(channels)
    if kind == "group":
        groups = math.gcd(channels, 32 if channels >= 64 else 8)
        return nn.GroupNorm(groups, channels)
    if kind in ("spectral", "none"):
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


def _apply_norm(norm: nn.Module, h: Tensor, y: Tensor | None) -> Tensor:
    return norm(h, y) if isinstance(norm, ConditionalBatchNorm2d) else norm(h)


class ConvEncoder(nn.Module):
    """Image → feature map with ``Conv(4, 2, 1)`` + norm + activation stages.

    The first stage has no normalization (DCGAN practice). A 0-stage plan
    (images of side 4..7) uses one 3×3 stride-1 convolution instead.

    Args:
        in_channels: C (plus any label planes the caller concatenates).
        plan: from :func:`plan_resolution`.
        width: channels of the first (highest-resolution) stage, ×2 per stage.
        norm: ``batch``, ``group``, ``spectral`` (no norm layer; the caller
            applies :func:`spectral_norm_`) or ``none``.
        act: factory of the activation module.
    """

    def __init__(self, in_channels: int, plan: ResolutionPlan, width: int, max_width: int,
                 norm: Norm, act: Callable[[], nn.Module]) -> None:
        super().__init__()
        widths = stage_widths(width, plan.stages, max_width)
        layers: list[nn.Module] = []
        if plan.stages == 0:
            layers += [nn.Conv2d(in_channels, widths[0], 3, 1, 1), act()]
        c = in_channels
        for i in range(plan.stages):
            layers.append(nn.Conv2d(c, widths[i], 4, 2, 1, bias=(i == 0 or norm not in ("batch", "group"))))
            if i > 0:
                layers.append(make_norm(norm, widths[i]))
            layers.append(act())
            c = widths[i]
        self.net = nn.Sequential(*layers)
        self.out_channels = widths[-1]
        self.out_size = plan.encoded

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C, S, S] → [B, F, s, s] with F = ``out_channels``, s = ``out_size``."""
        return self.net(x)


def upsample_conv(in_channels: int, out_channels: int, kind: Upsample, bias: bool) -> nn.Module:
    """×2 upsampling with a learned filter: [B, F_in, s, s] → [B, F_out, 2s, 2s].

    ``deconv``: ``ConvTranspose(4, 2, 1)`` (DCGAN). ``resize``: nearest-neighbour
    ×2 then ``Conv(3, 1, 1)`` (Odena et al. 2016, "Deconvolution and
    checkerboard artifacts"): every output pixel sees the same number of
    weights, so there is no checkerboard pattern to unlearn.
    """
    if kind == "deconv":
        return nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=bias)
    if kind == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                             nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=bias))
    raise ValueError(f"unknown upsample {kind!r}; choose deconv or resize")


class ConvDecoder(nn.Module):
    """Vector → image: ``Linear`` to base×base, then ×2 upsampling
    (:func:`upsample_conv`) + norm + activation stages, a last upsampling to
    ``out_channels`` (no norm, no activation) and a center crop to the image size.

    With ``num_classes`` > 0 and ``norm="batch"`` every norm is a
    :class:`ConditionalBatchNorm2d` driven by the labels passed to forward.
    """

    def __init__(self, in_features: int, out_channels: int, plan: ResolutionPlan, width: int,
                 max_width: int, norm: Norm, act: Callable[[], nn.Module], num_classes: int = 0,
                 upsample: Upsample = "deconv") -> None:
        super().__init__()
        self.plan = plan
        widths = stage_widths(width, plan.stages, max_width)[::-1]  # lowest resolution first
        cond = num_classes if norm == "batch" else 0
        self.base_channels = widths[0]
        self.project = nn.Linear(in_features, widths[0] * plan.base ** 2, bias=norm not in ("batch", "group"))
        self.norms = nn.ModuleList([make_norm(norm, widths[0], cond)])
        self.ups = nn.ModuleList()
        for i in range(plan.stages - 1):
            self.ups.append(upsample_conv(widths[i], widths[i + 1], upsample, bias=norm not in ("batch", "group")))
            self.norms.append(make_norm(norm, widths[i + 1], cond))
        self.act = act()
        if plan.stages == 0:
            self.out = nn.Conv2d(widths[-1], out_channels, 3, 1, 1)
        else:
            self.out = upsample_conv(widths[-1], out_channels, upsample, bias=True)

    def forward(self, v: Tensor, y: Tensor | None = None) -> Tensor:
        """v [B, in_features] (+ labels [B] for conditional norms) → [B, C, S, S] (no output activation)."""
        b = self.plan.base
        h = self.project(v).view(v.shape[0], self.base_channels, b, b)  # [B, F0, b, b]
        h = self.act(_apply_norm(self.norms[0], h, y))
        for up, norm in zip(self.ups, self.norms[1:]):
            h = self.act(_apply_norm(norm, up(h), y))  # [B, F, 2s, 2s]
        return center_crop(self.out(h), self.plan.image_size)


def dcgan_init_(module: nn.Module) -> None:
    """DCGAN initialization (Radford et al. 2016): conv/linear weights N(0, 0.02),
    biases 0, BatchNorm scales N(1, 0.02). Apply before :func:`spectral_norm_`."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def spectral_norm_(module: nn.Module) -> None:
    """Wrap the weight of every conv, linear and embedding layer in spectral
    normalization (Miyato et al. 2018), in place."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            nn.utils.parametrizations.spectral_norm(m)
