"""Reading and writing IDX files (the MNIST family's format), gzip-compressed or not.

Layout (all integers big-endian): 2 zero bytes, a type byte (0x08 = uint8),
a byte ``ndim``, then ``ndim`` uint32 sizes, then the row-major data. MNIST's
image files have magic 2051 (0x00000803: uint8, 3 dims ``[N, rows, cols]``)
and its label files magic 2049 (0x00000801: uint8, 1 dim ``[N]``).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError

__all__ = ["read_idx", "read_idx_images", "read_idx_labels", "encode_idx", "IMAGES_MAGIC", "LABELS_MAGIC"]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_UINT8 = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == _GZIP_MAGIC:
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a cut .gz raises EOFError
        raise DataError(f"cannot read {path}: {e or type(e).__name__} (corrupt or truncated file?); "
                        f"replace it with a good copy") from None


def read_idx(path: str | Path, *, magic: int | None = None) -> np.ndarray:
    """Parse an unsigned-byte IDX file.

    Args:
        path: ``.gz`` or uncompressed IDX file (detected from its content).
        magic: expected magic number (e.g. :data:`IMAGES_MAGIC`), or None for any uint8 IDX.

    Returns:
        uint8 array of the file's dimensions (a writable copy).

    Raises:
        DataError: unreadable, not IDX, wrong magic, or data length not equal to
            the header's sizes (truncated or trailing bytes); names the file.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, too short for an IDX header")
    found = struct.unpack(">I", raw[:4])[0]
    if raw[0] != 0 or raw[1] != 0 or raw[2] != _UINT8 or (magic is not None and found != magic):
        want = f"magic {magic}" if magic is not None else "an unsigned-byte IDX magic (0x000008NN)"
        raise DataError(f"{path} is not the expected IDX file: magic {found} (0x{found:08x}), expected {want}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, shorter than its {header}-byte IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected, actual = math.prod(dims), len(raw) - header
    if actual != expected:
        what = "truncated" if actual < expected else "corrupt (trailing bytes)"
        raise DataError(f"{path} is {what}: header says {' x '.join(map(str, dims))} = {expected} values, "
                        f"file holds {actual}; replace it with a good copy")
    return np.frombuffer(raw, np.uint8, count=expected, offset=header).reshape(dims).copy()


def read_idx_images(path: str | Path) -> np.ndarray:
    """Images file (magic 2051) → uint8 ``[N, rows, cols]``."""
    return read_idx(path, magic=IMAGES_MAGIC)


def read_idx_labels(path: str | Path) -> np.ndarray:
    """Labels file (magic 2049) → uint8 ``[N]``."""
    return read_idx(path, magic=LABELS_MAGIC)


def encode_idx(array: np.ndarray, *, compress: bool = False) -> bytes:
    """Inverse of :func:`read_idx`: uint8 array (1 to 255 dims) → IDX bytes (gzipped if ``compress``)."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 255:
        raise ValueError(f"encode_idx takes a uint8 array of 1..255 dims, got {array.dtype} {array.shape}")
    raw = bytes([0, 0, _UINT8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    return gzip.compress(raw, mtime=0) if compress else raw
