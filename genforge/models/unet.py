"""A small U-Net denoiser for 8-64 px images: residual blocks with GroupNorm, sinusoidal time embedding, an
optional class embedding (with a "no label" entry for classifier-free guidance), self-attention at the
lowest resolution, and optional cross-attention to a text encoding after every residual block at sides
≤ ``cross_size`` (text-to-image).

GroupNorm (never BatchNorm) keeps every example independent of the rest of its batch, so the model runs the
same under data-parallel training and in any batch size. Shape legend: B batch, C image channels, S side,
W channels of a level, E embedding width, K classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import group_norm
from .text_encoder import CrossAttention


@dataclass(frozen=True)
class UNetShape:
    """Resolutions and widths of the levels: ``sizes[i]`` pixels with ``widths[i]`` channels."""

    sizes: tuple[int, ...]
    widths: tuple[int, ...]


def plan_levels(image_size: int, width: int, max_mult: int = 4, min_size: int = 4, max_levels: int = 4) -> UNetShape:
    """Halve the side while it stays even and ≥ ``min_size`` (28 → 14 → 7; 32 → 16 → 8 → 4), at most
    ``max_levels`` levels; widths double per level up to ``max_mult`` × ``width``."""
    sizes = [image_size]
    while len(sizes) < max_levels and sizes[-1] % 2 == 0 and sizes[-1] // 2 >= min_size:
        sizes.append(sizes[-1] // 2)
    widths = [width * min(2 ** i, max_mult) for i in range(len(sizes))]
    return UNetShape(tuple(sizes), tuple(widths))


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: float [B] → [B, dim] (cos half, sin half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # [B, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def embed_time_and_label(self: nn.Module, t: Tensor, y: Tensor | None) -> Tensor:
    """A denoiser's conditioning [B, E]: ``self.time`` of the sinusoidal embedding of t (``self.width`` wide)
    plus ``self.label``'s row of y (the "no label" entry ``self.num_classes`` when y is None; class weights
    float [B, K] or [B, K+1] mix the rows); the U-Net's and the DiT's ``embed``."""
    e = self.time(timestep_embedding(t, self.width))
    if self.label is not None:
        if y is None:
            y = torch.full((t.shape[0],), self.num_classes, dtype=torch.long, device=t.device)
        if y.is_floating_point():
            e = e + F.pad(y, (0, self.num_classes + 1 - y.shape[1])).to(e.dtype) @ self.label.weight
        else:
            e = e + self.label(y)
    return e


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, plus the embedding as a per-channel scale and shift, → GroupNorm → SiLU → conv;
    a 1×1 conv on the skip when the width changes. [B, W_in, S, S] → [B, W_out, S, S]."""

    def __init__(self, w_in: int, w_out: int, emb: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(w_in)
        self.conv1 = nn.Conv2d(w_in, w_out, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * w_out)
        self.norm2 = group_norm(w_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(w_out, w_out, 3, padding=1)
        self.skip = nn.Conv2d(w_in, w_out, 1) if w_in != w_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)  # [B, W, 1, 1] each
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the S·S positions, residual. [B, W, S, S] → same."""

    def __init__(self, width: int, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads if width % heads == 0 else 1
        self.norm = group_norm(width)
        self.qkv = nn.Conv2d(width, 3 * width, 1)
        self.out = nn.Conv2d(width, width, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, w, s, _ = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, w // self.heads, s * s).unbind(1)
        y = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.out(y.transpose(-1, -2).reshape(b, w, s, s))  # heads [B, H, S·S, W/H] → [B, W, S, S]


class UNet(nn.Module):
    """ε / v / velocity predictor: (x [B, C + Cc, S, S], t float [B], labels [B] or None) → [B, C, S, S].

    ``cond_channels`` Cc: a conditioning image concatenated to x_t by the caller (super-resolution);
    0 = none. Labels may be class weights float [B, K] instead (a soft label). Labels use index ``num_classes`` as "no label" (classifier-free guidance trains it by label dropout);
    ``None`` means no label for the whole batch.
    """

    def __init__(self, channels: int, image_size: int, *, width: int = 32, blocks: int = 1, max_mult: int = 4,
                 attention: bool = True, dropout: float = 0.0, num_classes: int = 0, cond_channels: int = 0,
                 context: int = 0, cross_size: int = 16) -> None:
        super().__init__()
        self.shape = plan_levels(image_size, width, max_mult)
        self.num_classes = num_classes
        self.emb_dim = emb = 4 * width
        self.width = width
        self.time = nn.Sequential(nn.Linear(width, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label = nn.Embedding(num_classes + 1, emb) if num_classes else None
        ws = self.shape.widths
        self.stem = nn.Conv2d(channels + cond_channels, ws[0], 3, padding=1)  # x_t (+ a conditioning image)
        self.down = nn.ModuleList()
        skips = [ws[0]]
        w = ws[0]
        cross = [bool(context) and side <= cross_size for side in self.shape.sizes]
        for i, wl in enumerate(ws):
            level = nn.ModuleList()
            for _ in range(blocks):
                level.append(ResBlock(w, wl, emb, dropout))
                w = wl
                skips.append(w)
                if cross[i]:
                    level.append(CrossAttention(w, context))
            if i < len(ws) - 1:
                level.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
                skips.append(w)
            self.down.append(level)
        self.mid = nn.ModuleList([ResBlock(w, w, emb, dropout), ResBlock(w, w, emb, dropout)])
        self.mid_attn = Attention(w) if attention else nn.Identity()
        self.mid_cross = CrossAttention(w, context) if context else None
        self.up = nn.ModuleList()
        for i, wl in reversed(list(enumerate(ws))):
            level = nn.ModuleList()
            for _ in range(blocks + 1):
                level.append(ResBlock(w + skips.pop(), wl, emb, dropout))
                w = wl
                if cross[i]:
                    level.append(CrossAttention(w, context))
            if i > 0:
                level.append(nn.Conv2d(w, w, 3, padding=1))  # after a nearest ×2 upsample
            self.up.append(level)
        self.head = nn.Sequential(group_norm(w), nn.SiLU(), nn.Conv2d(w, channels, 3, padding=1))

    embed = embed_time_and_label

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self.trunk(x, self.embed(t, y))

    def trunk(self, x: Tensor, emb: Tensor, text: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The network after the conditioning embedding: x [B, C, S, S], emb [B, E], and for a text-conditioned
        U-Net ``text`` = (token vectors [B, L, D], key mask bool [B, L]) → [B, C, S, S]."""
        h = self.stem(x)
        hs = [h]
        for level in self.down:
            for layer in level:
                if isinstance(layer, CrossAttention):
                    h = hs[-1] = layer(h, *text)  # refines the block's output, which is also its skip
                    continue
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
                hs.append(h)
        h = self.mid[0](h, emb)
        h = self.mid_attn(h)
        if self.mid_cross is not None:
            h = self.mid_cross(h, *text)
        h = self.mid[1](h, emb)
        for level in self.up:
            for layer in level:
                if isinstance(layer, ResBlock):
                    h = layer(torch.cat([h, hs.pop()], dim=1), emb)
                elif isinstance(layer, CrossAttention):
                    h = layer(h, *text)
                else:  # upsample to the next level's side (7 → 14 → 28)
                    h = layer(F.interpolate(h, size=hs[-1].shape[-1], mode="nearest"))
        return self.head(h)
