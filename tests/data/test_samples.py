"""Reading images made by any tool: layouts, dtypes, value ranges and refusals."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from genforge.data import DataError
from genforge.data.samples import load_samples


def test_load_samples_layouts(tmp_path):
    rng = np.random.default_rng(0)
    nhw = rng.integers(0, 256, (5, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "a.npy", nhw)
    assert torch.equal(load_samples(tmp_path / "a.npy"), torch.from_numpy(nhw)[:, None])
    nhwc = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "b.npz", images=nhwc, labels=np.arange(5))
    assert torch.equal(load_samples(tmp_path / "b.npz"), torch.from_numpy(nhwc).permute(0, 3, 1, 2))
    nchw = nhwc.transpose(0, 3, 1, 2)
    np.save(tmp_path / "c.npy", nchw)
    assert torch.equal(load_samples(tmp_path / "c.npy"), torch.from_numpy(nchw))
    np.save(tmp_path / "d.npy", nhw.astype(np.float32) / 255)
    assert torch.equal(load_samples(tmp_path / "d.npy"), torch.from_numpy(nhw)[:, None])
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(nhw[i]).save(folder / f"{i}.png")
    got = load_samples(folder)
    assert got.shape == (4, 1, 8, 8) and {bytes(t.numpy()) for t in got} == {bytes(nhw[i]) for i in range(4)}


@pytest.mark.parametrize("array,pattern", [
    (np.full((4, 8, 8), 1.5, np.float32), r"float images must lie in \[0, 1\].*1\.5"),
    (np.full((4, 8, 8), np.nan, np.float32), "NaN"),
    (np.zeros((4, 8), np.uint8), r"got shape \[4, 8\]"),
    (np.zeros((4, 5, 8, 8), np.uint8), "not \\[N, H, W\\]"),
    (np.zeros((4, 8, 6), np.uint8), "only square images"),
    (np.full((4, 8, 8), 300, np.int32), r"0\.\.255"),
    (np.zeros((1, 8, 8), np.uint8), "at least 2"),
])
def test_bad_samples_are_refused(tmp_path, array, pattern):
    np.save(tmp_path / "s.npy", array)
    with pytest.raises(DataError, match=pattern):
        load_samples(tmp_path / "s.npy")


def test_bad_sample_files_are_refused(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 8, 8), np.uint8), b=np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(DataError, match="holds arrays \\['a', 'b'\\]"):
        load_samples(tmp_path / "two.npz")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a plain .npy"):
        load_samples(tmp_path / "obj.npy")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="expected a .npy or .npz"):
        load_samples(tmp_path / "x.txt")
    with pytest.raises(DataError, match="not found"):
        load_samples(tmp_path / "missing.npy")


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_boolean_arrays_are_refused(tmp_path, suffix):
    mask = np.random.default_rng(0).random((4, 8, 8)) > 0.5
    path = tmp_path / f"mask{suffix}"
    np.save(path, mask) if suffix == ".npy" else np.savez(path, samples=mask)
    with pytest.raises(DataError, match=r"boolean arrays are not images; save uint8 0\.\.255 or float in \[0, 1\]"):
        load_samples(path)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_empty_and_truncated_files_are_named(tmp_path, suffix):
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(DataError) as err:
        load_samples(empty)
    assert str(err.value) == (f"{empty} is empty (0 bytes): it holds no images; write it again "
                              f"(numpy.save / numpy.savez)")
    full = tmp_path / f"full{suffix}"
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8), dtype=np.uint8)
    np.save(full, images) if suffix == ".npy" else np.savez(full, samples=images)
    raw = full.read_bytes()
    for cut in (len(raw) // 2, len(raw) - 10, 20):  # data, end and header cut off
        path = tmp_path / f"cut{cut}{suffix}"
        path.write_bytes(raw[:cut])
        with pytest.raises(DataError, match=re.escape(f"{path} is truncated or damaged and cannot be read")):
            load_samples(path)


def test_damaged_npz_member_is_named(tmp_path):
    path = tmp_path / "gen.npz"
    np.savez_compressed(path, samples=np.random.default_rng(0).integers(0, 256, (64, 16, 16), dtype=np.uint8))
    raw = bytearray(path.read_bytes())
    raw[200:240] = bytes(40)  # inside the compressed member; the zip directory at the end stays intact
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=re.escape(f"{path} is truncated or damaged")):
        load_samples(path)
