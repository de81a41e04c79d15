"""Whole-dataset transforms on uint8 image tensors, and seeded index splits.

Every function here takes and returns uint8 ``[N, C, H, W]`` tensors (or
int64 index tensors) and is deterministic; large inputs are processed in
chunks so a 60k-image dataset never needs a full float copy.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import DataError

__all__ = ["resize_center_crop", "convert_channels", "split_indices", "split_groups",
           "shuffled_subset"]

_CHUNK = 2048  # images per chunk of float work
_LUMA = (299, 587, 114)  # ITU-R 601-2 weights ×1000, as Pillow's convert("L")


def _chunked(x: Tensor, fn) -> Tensor:
    if x.shape[0] <= _CHUNK:
        return fn(x)
    return torch.cat([fn(x[i:i + _CHUNK]) for i in range(0, x.shape[0], _CHUNK)])


def resize_center_crop(x: Tensor, size: int) -> Tensor:
    """Resize so the shorter side is ``size``, then crop the centre ``size × size``.

    Bicubic with antialiasing (so downscaling does not alias), rounded and
    clamped back to 0..255. Images already ``size × size`` are returned as is.

    Args:
        x: uint8 ``[N, C, H, W]``.
        size: output side in pixels.

    Returns:
        uint8 ``[N, C, size, size]``, contiguous.
    """
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x.contiguous()
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    top, left = (nh - size) // 2, (nw - size) // 2

    def one(chunk: Tensor) -> Tensor:
        if (nh, nw) != (h, w):
            chunk = F.interpolate(chunk.float(), size=(nh, nw), mode="bicubic", antialias=True,
                                  align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
        return chunk[..., top:top + size, left:left + size]

    return _chunked(x, one).contiguous()


def _luma(rgb: Tensor) -> Tensor:
    """int32 ``[N, 3, H, W]`` → int32 ``[N, 1, H, W]``, rounded like Pillow."""
    r, g, b = rgb.unbind(1)
    return ((r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2] + 500) // 1000).unsqueeze(1)


def convert_channels(x: Tensor, channels: int, background: tuple[int, int, int] = (0, 0, 0)) -> Tensor:
    """Convert between grayscale (1), RGB (3) and RGBA (4).

    Gray → RGB repeats the channel; → RGBA adds an opaque alpha (255).
    RGB → gray uses Pillow's luma weights ``(299 R + 587 G + 114 B) / 1000``.
    RGBA → RGB or gray first composites the image over ``background``
    (``(rgb * alpha + bg * (255 - alpha)) / 255``, black by default), so hidden
    colour under transparent pixels never leaks into the result.

    Args:
        x: uint8 ``[N, C, H, W]`` with C in {1, 3, 4}.
        channels: 1, 3 or 4.
        background: (R, G, B) 0..255 under transparent pixels.

    Returns:
        uint8 ``[N, channels, H, W]``, contiguous.
    """
    c = x.shape[1]
    if c == channels:
        return x.contiguous()
    if c not in (1, 3, 4) or channels not in (1, 3, 4):
        raise DataError(f"cannot convert {c}-channel images to {channels} channels (only 1, 3 and 4 are supported)")

    def one(chunk: Tensor) -> Tensor:
        v = chunk.to(torch.int32)
        if c == 4:  # composite over the background
            bg = torch.tensor(background, dtype=torch.int32, device=v.device).view(1, 3, 1, 1)
            v = (v[:, :3] * v[:, 3:] + bg * (255 - v[:, 3:]) + 127) // 255
        if channels == 1:
            out = v if c == 1 else _luma(v)
        else:
            rgb = v.expand(-1, 3, -1, -1) if c == 1 else v
            out = rgb if channels == 3 else torch.cat([rgb, torch.full_like(rgb[:, :1], 255)], 1)
        return out.to(torch.uint8)

    return _chunked(x, one).contiguous()


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed & 0xFFFF_FFFF_FFFF_FFFF)


def split_indices(n: int, test_fraction: float, seed: int, labels: Tensor | None = None,
                  what: str = "dataset") -> tuple[Tensor, Tensor]:
    """Seeded train/test split of ``range(n)``, stratified by ``labels`` when given.

    The test side gets ``round(test_fraction * n)`` examples (at least 1, at
    most ``n - 1``). With labels they are shared among classes in proportion to
    class size (largest remainder), so class proportions match on both sides.

    Args:
        n: number of examples.
        test_fraction: share for the test side, in (0, 1).
        seed: split seed (independent of the global RNG).
        labels: optional int64 ``[n]``.
        what: names the data in error messages.

    Returns:
        ``(train_idx, test_idx)``: sorted int64 tensors, disjoint, covering ``range(n)``,
        both non-empty.
    """
    if n < 2:
        raise DataError(f"{what} has {n} usable example(s); a train/test split needs at least 2")
    n_test = min(max(int(test_fraction * n + 0.5), 1), n - 1)
    g = _generator(seed)
    if labels is None:
        test = torch.randperm(n, generator=g)[:n_test]
    else:
        groups = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels).tolist()]
        quotas = [test_fraction * len(idx) for idx in groups]
        counts = [int(q) for q in quotas]
        by_remainder = sorted(range(len(groups)), key=lambda i: counts[i] - quotas[i])  # largest remainder first
        for i in by_remainder[: n_test - sum(counts)]:
            counts[i] += 1
        test = torch.cat([idx[torch.randperm(len(idx), generator=g)[:k]] for idx, k in zip(groups, counts)])
    mask = torch.ones(n, dtype=torch.bool)
    mask[test] = False
    return torch.nonzero(mask).flatten(), torch.sort(test).values


def split_groups(groups: Sequence[Hashable], test_fraction: float, seed: int,
                 what: str = "dataset") -> tuple[Tensor, Tensor]:
    """Seeded train/test split that keeps every group whole: examples with the same key (e.g. an emoji
    and its skin-tone variants, near-duplicates) all land on one side.

    ``round(test_fraction * G)`` of the G groups (at least 1, at most G - 1) go to the test side, drawn
    by a seeded permutation of the sorted keys, so the test side holds about that share of examples
    too, without one large group deciding it.

    Args:
        groups: one hashable, sortable key per example.
        test_fraction: share of the groups for the test side, in (0, 1).
        seed: split seed.
        what: names the data in error messages.

    Returns:
        ``(train_idx, test_idx)``: sorted int64 tensors, disjoint, covering ``range(n)``, both non-empty.
    """
    keys = sorted(set(groups))
    if len(keys) < 2:
        raise DataError(f"{what} has {len(keys)} group(s) of examples; a train/test split by group needs at least 2")
    members: dict[Hashable, list[int]] = {k: [] for k in keys}
    for i, k in enumerate(groups):
        members[k].append(i)
    n_test = min(max(int(test_fraction * len(keys) + 0.5), 1), len(keys) - 1)
    test = [i for j in torch.randperm(len(keys), generator=_generator(seed))[:n_test].tolist() for i in members[keys[j]]]
    mask = torch.ones(len(groups), dtype=torch.bool)
    mask[test] = False
    return torch.nonzero(mask).flatten(), torch.sort(torch.tensor(test, dtype=torch.int64)).values


def shuffled_subset(n: int, k: int, seed: int) -> Tensor:
    """The first ``min(k, n)`` indices of a seeded permutation of ``range(n)`` (int64)."""
    return torch.randperm(n, generator=_generator(seed))[:k]
