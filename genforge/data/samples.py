"""Images made by any tool, read for evaluation: ``.npy`` / ``.npz`` arrays or a folder of image files.

    >>> x = load_samples("gen.npz")        # uint8 [N, C, H, W]
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genforge.config import DataConfig

from .errors import DataError

__all__ = ["NPZ_KEYS", "load_samples"]


def _from_array(a: np.ndarray, what: str) -> Tensor:
    """A numpy array of images → uint8 [N, C, H, W]; see :func:`load_samples` for the accepted layouts."""
    if a.dtype.kind == "b":  # a mask or thresholded output: scoring it would compare near-black images
        raise DataError(f"{what}: boolean arrays are not images; save uint8 0..255 or float in [0, 1]")
    if a.dtype == object or a.dtype.kind not in "uif":
        raise DataError(f"{what}: expected a numeric array of images, got dtype {a.dtype}")
    if a.ndim == 3:
        a = a[:, None]  # [N, H, W] → [N, 1, H, W]
    elif a.ndim == 4:
        first, last = a.shape[1] in (1, 3, 4), a.shape[3] in (1, 3, 4)
        nchw = first and a.shape[2] == a.shape[3]
        nhwc = last and a.shape[1] == a.shape[2]
        if nchw and nhwc and a.shape[1] != a.shape[3]:
            raise DataError(f"{what}: shape {list(a.shape)} is ambiguous between [N, C, H, W] and [N, H, W, C]")
        if nhwc and not nchw:
            a = a.transpose(0, 3, 1, 2)
        elif not nchw:
            raise DataError(f"{what}: shape {list(a.shape)} is not [N, H, W], [N, H, W, C] or [N, C, H, W] "
                            f"with C in 1, 3, 4 and square images")
    else:
        raise DataError(f"{what}: expected images [N, H, W], [N, H, W, C] or [N, C, H, W], got shape "
                        f"{list(a.shape)}")
    if a.shape[0] < 2:
        raise DataError(f"{what}: holds {a.shape[0]} image(s); an evaluation needs at least 2")
    if a.shape[2] != a.shape[3]:
        raise DataError(f"{what}: images are {a.shape[2]}x{a.shape[3]}; only square images are supported")
    if a.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(a))
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise DataError(f"{what}: float images contain NaN or inf")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"{what}: float images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
                            f"map [-1, 1] images with (x + 1) / 2, or save uint8")
        return torch.from_numpy(np.ascontiguousarray(np.rint(a.astype(np.float64) * 255.0).astype(np.uint8)))
    lo, hi = int(a.min()), int(a.max())  # other integer arrays: accepted when they hold 0..255
    if lo < 0 or hi > 255:
        raise DataError(f"{what}: integer images must hold values in 0..255, got {lo}..{hi}")
    return torch.from_numpy(np.ascontiguousarray(a.astype(np.uint8)))


NPZ_KEYS = ("samples", "images", "x", "arr_0")  # looked up in this order when an .npz holds several arrays

# What numpy raises for an empty, truncated or damaged .npy/.npz (a bad header or short data: ValueError/EOFError;
# a cut or corrupt zip: BadZipFile, zlib.error; an unreadable file: OSError).
_DAMAGED = (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error)


def _damaged(p: Path, e: BaseException) -> DataError:
    """The error for a .npy/.npz numpy cannot read: pickled data, or a truncated or damaged file."""
    if "pickle" in str(e):  # object arrays: refused without pickle
        kind = ".npz archive" if p.suffix == ".npz" else ".npy array"
        return DataError(f"{p} is not a plain {kind} ({e}); save numeric images (uint8 or float) without pickle")
    return DataError(f"{p} is truncated or damaged and cannot be read ({type(e).__name__}: {e}); write it again "
                     f"(numpy.save / numpy.savez)")


def load_samples(path: str | Path) -> Tensor:
    """Images made by any tool, as uint8 ``[N, C, H, W]``.

    Accepted:

    - ``.npy``: one array; ``.npz``: its only array, or the first of ``samples``,
      ``images``, ``x``, ``arr_0`` (read without pickle).
    - Layouts ``[N, H, W]`` (grey), ``[N, H, W, C]`` and ``[N, C, H, W]`` with C in
      1, 3, 4 and square images: channels-last is recognised by a last axis of
      size 1/3/4 with equal axes 1 and 2, channels-first by an axis 1 of size
      1/3/4 with equal axes 2 and 3 (a shape matching both differently is refused).
    - dtypes: uint8 as is; floats in ``[0, 1]`` (rounded to 8 bits); other integers
      holding 0..255.
    - A folder of PNG/JPEG/BMP/WebP images of one square size (class sub-folders allowed;
      labels are ignored).

    Refused: boolean arrays (masks are not images), and empty (0-byte),
    truncated or damaged files (a DataError naming the file, not a traceback).

    Raises:
        DataError: a missing, empty or damaged file, another format, a bad
            dtype, shape or value range.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"samples {p} not found")
    if p.is_dir():
        from .imagefolder import load_imagefolder

        d = load_imagefolder(DataConfig(name=f"imagefolder:{p}", test_fraction=0.5))
        return torch.cat([d.train_x, d.test_x]).contiguous()
    if p.suffix in (".npy", ".npz") and p.stat().st_size == 0:
        raise DataError(f"{p} is empty (0 bytes): it holds no images; write it again (numpy.save / numpy.savez)")
    if p.suffix == ".npy":
        try:
            a = np.load(p, allow_pickle=False)
        except _DAMAGED as e:
            raise _damaged(p, e) from None
        return _from_array(a, str(p))
    if p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                names = list(z.files)
                key = names[0] if len(names) == 1 else next((k for k in NPZ_KEYS if k in names), None)
                if key is None:
                    raise DataError(f"{p} holds arrays {names}; name the images one of {', '.join(NPZ_KEYS)}")
                a = z[key]
        except _DAMAGED as e:
            raise _damaged(p, e) from None
        return _from_array(a, f"{p}[{key}]")
    raise DataError(f"samples {p}: expected a .npy or .npz file of images, or a folder of image files")


