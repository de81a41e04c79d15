"""A diffusion transformer (DiT, Peebles & Xie 2023) denoiser: the image (or latent) cut into p × p patches,
one token each with a fixed 2-D sine-cosine position, pre-norm transformer blocks whose LayerNorms are
modulated by the conditioning embedding (adaLN-Zero: every block starts as the identity), text tokens
entering through a cross-attention layer in each block (as in PixArt-α), and a modulated linear head back to
patches.

It has the U-Net's interface (:class:`~genforge.models.unet.UNet`): ``embed(t, y)`` → [B, E],
``trunk(x, emb, text)``, ``forward(x, t, y)`` and ``emb_dim``, so the diffusion family runs either.

Shape legend: B batch, C channels, S side, p patch side, N = (S/p)² tokens, D width, L text tokens,
K classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .unet import embed_time_and_label


def sincos_positions(side: int, width: int) -> Tensor:
    """Fixed 2-D sine-cosine position vectors of a side × side grid of tokens, row-major: float [side², width]
    (half the width codes the row, half the column; ``width`` a multiple of 4)."""
    quarter = width // 4
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(quarter, dtype=torch.float32) / quarter)  # [D/4]
    grid = torch.arange(side, dtype=torch.float32)
    rows, cols = torch.meshgrid(grid, grid, indexing="ij")  # [side, side] each

    def code(pos: Tensor) -> Tensor:
        args = pos.reshape(-1, 1) * freqs  # [N, D/4]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1)  # [N, D/2]

    return torch.cat([code(rows), code(cols)], dim=1)


def patchify(x: Tensor, p: int) -> Tensor:
    """[B, C, S, S] → [B, N, p·p·C]: row-major patches, each flattened in (row, column, channel) order."""
    b, c, s, _ = x.shape
    g = s // p
    return x.reshape(b, c, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(b, g * g, p * p * c)


def unpatchify(h: Tensor, p: int, c: int) -> Tensor:
    """The inverse of :func:`patchify`: [B, N, p·p·C] → [B, C, S, S] with S = p·√N."""
    b, n, _ = h.shape
    g = math.isqrt(n)
    return h.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, g * p, g * p)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x [B, N, D] with per-example shift and scale [B, D]."""
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Self-attention, cross-attention to the text (when ``context``), MLP; the self-attention and MLP are
    adaLN-Zero modulated by the embedding. x [B, N, D], emb [B, E] → [B, N, D]."""

    def __init__(self, width: int, heads: int, emb: int, context: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.cross = None
        if context:
            self.cross_norm = nn.LayerNorm(width, eps=1e-6)
            self.q = nn.Linear(width, width)
            self.kv = nn.Linear(context, 2 * width)
            self.cross = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Dropout(dropout),
                                 nn.Linear(4 * width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(emb, 6 * width))
        nn.init.zeros_(self.ada[1].weight)  # adaLN-Zero: gates start at 0, so the block is the identity
        nn.init.zeros_(self.ada[1].bias)

    def _heads(self, t: Tensor) -> Tensor:
        b, n, d = t.shape
        return t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)  # [B, h, n, D/h]

    def forward(self, x: Tensor, emb: Tensor, text: tuple[Tensor, Tensor] | None = None) -> Tensor:
        b, n, d = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(emb).chunk(6, dim=1)  # [B, D] each
        q, k, v = self._heads(self.qkv(_modulate(self.norm1(x), shift1, scale1))).chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)  # [B, h, N, D/h]
        x = x + gate1[:, None] * self.proj(y.transpose(1, 2).reshape(b, n, d))
        if self.cross is not None:
            context, keep = text  # [B, L, Dc], bool [B, L]
            q = self._heads(self.q(self.cross_norm(x)))
            k, v = (self._heads(t) for t in self.kv(context).chunk(2, dim=-1))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
            x = x + self.cross(y.transpose(1, 2).reshape(b, n, d))
        return x + gate2[:, None] * self.mlp(_modulate(self.norm2(x), shift2, scale2))


class DiT(nn.Module):
    """ε / v / velocity predictor: (x [B, C, S, S], t float [B], labels [B] or None) → [B, C, S, S].

    Labels use index ``num_classes`` as "no label" (classifier-free guidance), as in the U-Net; class
    weights float [B, K] are accepted too. ``context`` D_c > 0: every block cross-attends to text tokens.
    """

    def __init__(self, channels: int, image_size: int, *, width: int = 256, depth: int = 6, heads: int = 4,
                 patch: int = 2, dropout: float = 0.0, num_classes: int = 0, context: int = 0) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"the patch side {patch} does not divide the side {image_size}")
        if width % 4 or width % heads:
            raise ValueError(f"width {width} must be a multiple of 4 and of heads {heads}")
        self.channels, self.patch, self.side = channels, patch, image_size // patch
        self.width = self.emb_dim = width
        self.num_classes = num_classes
        self.embed_patches = nn.Conv2d(channels, width, patch, stride=patch)  # [B, C, S, S] → [B, D, S/p, S/p]
        self.register_buffer("positions", sincos_positions(self.side, width), persistent=False)  # [N, D]
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.label = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.blocks = nn.ModuleList(DiTBlock(width, heads, width, context, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.head = nn.Linear(width, patch * patch * channels)
        for zero in (self.ada[1].weight, self.ada[1].bias, self.head.weight, self.head.bias):
            nn.init.zeros_(zero)  # the network starts by predicting 0

    embed = embed_time_and_label  # [B, D]: time + label (see unet.embed_time_and_label)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self.trunk(x, self.embed(t, y))

    def trunk(self, x: Tensor, emb: Tensor, text: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x [B, C, S, S], emb [B, D], text = (token vectors [B, L, D_c], key mask bool [B, L]) → [B, C, S, S]."""
        h = self.embed_patches(x).flatten(2).transpose(1, 2) + self.positions.to(x.dtype)  # [B, N, D]
        for block in self.blocks:
            h = block(h, emb, text)
        shift, scale = self.ada(emb).chunk(2, dim=1)
        return unpatchify(self.head(_modulate(self.norm(h), shift, scale)), self.patch, self.channels)
