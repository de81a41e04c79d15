"""Inpainting masks and the images they apply to: built-in masks for evaluation, PNG masks, checks.

A mask is bool ``[1, S, S]`` per image: True marks a pixel to fill (restore), False a known pixel.
Built-ins (side S): ``center`` (the centre square of side S/2: 14×14 on 28×28), ``left``, ``right``,
``top``, ``bottom`` (that half of the image), ``random:FRACTION`` (each pixel independently with
probability FRACTION, seeded per image). A mask PNG is read as grayscale: white (≥ 128) = fill.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import Tensor

from genforge.data import read_image
from genforge.data.transforms import resize_center_crop

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
BUILTIN_MASKS = ("center", "left", "right", "top", "bottom", "random:FRACTION")


def is_builtin(spec: str) -> bool:
    return spec in BUILTIN_MASKS[:-1] or spec.startswith("random:")


def builtin_mask(spec: str, size: int, *, n: int = 1, seed: int = 0) -> Tensor:
    """``n`` masks bool [n, 1, size, size] for a built-in name (see the module docstring).

    ``random:FRACTION`` draws image i's pixels from a generator seeded ``seed + i``."""
    m = torch.zeros(1, size, size, dtype=torch.bool)
    half, quarter = size // 2, size // 4
    if spec == "center":
        m[:, quarter:quarter + half, quarter:quarter + half] = True
    elif spec == "left":
        m[:, :, :half] = True
    elif spec == "right":
        m[:, :, half:] = True
    elif spec == "top":
        m[:, :half, :] = True
    elif spec == "bottom":
        m[:, half:, :] = True
    elif spec.startswith("random:"):
        try:
            frac = float(spec.split(":", 1)[1])
        except ValueError:
            frac = -1.0
        if not 0 < frac <= 1:
            raise ValueError(f"mask {spec!r}: FRACTION must be a number in (0, 1], e.g. random:0.5")
        return torch.stack([torch.rand(1, size, size, generator=torch.Generator().manual_seed(seed + i)) < frac
                            for i in range(n)])
    else:
        raise ValueError(f"unknown mask {spec!r}: give a mask image (white = fill) or one of "
                         f"{', '.join(BUILTIN_MASKS)}")
    return m.expand(n, 1, size, size).clone()


def read_mask(path: str | Path) -> Tensor:
    """A mask image → bool [1, H, W]: white (gray ≥ 128, after compositing any alpha over black) = fill."""
    if not Path(path).exists():
        raise ValueError(f"mask {str(path)!r} is neither an image file nor a built-in mask ({', '.join(BUILTIN_MASKS)})")
    x, _ = read_image(path, 1)
    return x >= 128


def read_edit_mask(path: str | Path) -> Tensor:
    """An edit mask as OpenAI's image edits read it → bool [1, H, W] (True = a pixel to edit): the fully
    transparent pixels of a mask with an alpha channel; for a mask without alpha, white (as :func:`read_mask`)."""
    from PIL import Image

    with Image.open(path) as im:
        has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        if has_alpha:
            alpha = torch.frombuffer(bytearray(im.convert("RGBA").getchannel("A").tobytes()), dtype=torch.uint8)
            return (alpha == 0).view(1, im.height, im.width)
    return read_mask(path)


def read_model_image(path: str | Path, channels: int, *, warn: bool = True) -> Tensor:
    """An image for a model of ``channels`` channels → uint8 [channels, H, W].

    A colour image given to a grayscale model is converted (luma) with one warning line on stderr; a
    grayscale image given to a colour model is repeated over the channels (also warned)."""
    x, mode = read_image(path, channels)
    gray = mode in GRAY_MODES
    if warn and channels == 1 and not gray:
        print(f"warning: {path} is a colour ({mode}) image; converted to grayscale for this 1-channel model",
              file=sys.stderr)
    elif warn and channels > 1 and gray:
        print(f"warning: {path} is grayscale; repeated over {channels} channels for this colour model",
              file=sys.stderr)
    return x


def check_size(x: Tensor, size: int, what: str, *, resize: bool = False) -> Tensor:
    """uint8 [C, H, W] of side ``size``; another size is refused (naming both), or with ``resize`` scaled
    (bicubic, antialiased, centre-cropped to a square) with a warning."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if not resize:
        raise ValueError(f"{what} is {w}x{h} but the model works on {size}x{size} images; pass --resize to scale "
                         f"it (bicubic, centre crop)")
    print(f"warning: {what} resized from {w}x{h} to {size}x{size}", file=sys.stderr)
    return resize_center_crop(x[None], size)[0]


def check_mask(fill: Tensor, image: Tensor, what: str) -> Tensor:
    """A mask bool [1, H, W] for ``image`` uint8 [C, H, W]: same size and at least one pixel to fill."""
    if tuple(fill.shape[-2:]) != tuple(image.shape[-2:]):
        raise ValueError(f"mask is {fill.shape[-1]}x{fill.shape[-2]} but {what} is "
                         f"{image.shape[-1]}x{image.shape[-2]}: they must be the same size")
    if not bool(fill.any()):
        raise ValueError(f"the mask for {what} marks no pixel to fill (white = fill); nothing to inpaint")
    return fill
