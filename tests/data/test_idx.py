"""IDX parsing: round trips on synthetic files, and clear errors on bad ones."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from genforge.data import DataError
from genforge.data.idx import encode_idx, read_idx, read_idx_images, read_idx_labels


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    (tmp_path / "img").write_bytes(encode_idx(images, compress=compress))
    (tmp_path / "lab").write_bytes(encode_idx(labels, compress=compress))
    out = read_idx_images(tmp_path / "img")
    assert out.dtype == np.uint8 and out.shape == (7, 5, 3) and (out == images).all()
    assert (read_idx_labels(tmp_path / "lab") == labels).all()
    assert out.flags.writeable


def test_header_layout():
    raw = encode_idx(np.zeros((2, 28, 28), np.uint8))
    assert struct.unpack(">4I", raw[:16]) == (2051, 2, 28, 28)
    assert struct.unpack(">2I", encode_idx(np.zeros(3, np.uint8))[:8]) == (2049, 3)


def test_truncated_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(encode_idx(np.ones((4, 6, 6), np.uint8))[:-10])
    with pytest.raises(DataError, match=f"{path}.*truncated.*144 values.*134"):
        read_idx_images(path)


def test_trailing_bytes(tmp_path):
    path = tmp_path / "lab"
    path.write_bytes(encode_idx(np.ones(4, np.uint8)) + b"xx")
    with pytest.raises(DataError, match="trailing"):
        read_idx_labels(path)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = encode_idx(np.arange(4 * 28 * 28, dtype=np.int64).astype(np.uint8).reshape(4, 28, 28), compress=True)
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=f"cannot read {path}"):
        read_idx_images(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "x.gz"
    raw = bytearray(gzip.compress(encode_idx(np.ones((50, 28, 28), np.uint8))))
    raw[20:40] = b"\xff" * 20
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=str(path)):
        read_idx(path)


def test_wrong_magic(tmp_path):
    path = tmp_path / "labels-by-mistake"
    path.write_bytes(encode_idx(np.ones(10, np.uint8)))
    with pytest.raises(DataError, match="magic 2049.*expected magic 2051"):
        read_idx_images(path)
    path.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(DataError, match="not the expected IDX file"):
        read_idx(path)


def test_too_short(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="too short"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DataError, match="header"):
        read_idx(path)
