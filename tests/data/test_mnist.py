"""MNIST-format datasets from ``data_dir`` (offline), and the real MNIST when it is present.

The fake files here are not the datasets' (their checksums differ), so reading them needs ``verify=False``;
checksum verification itself is tested in test_verify.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genforge.config import DataConfig
from genforge.data import DataError, load_images
from genforge.data.idx import encode_idx

from .conftest import IDX_NAMES, write_fake_mnist


def test_data_dir_reads_the_four_files(tmp_path):
    arrays = write_fake_mnist(tmp_path, n_train=20, n_test=10)
    data = load_images(DataConfig(name="mnist", data_dir=str(tmp_path), verify=False), cache_dir=tmp_path / "unused")
    assert data.train_x.shape == (20, 1, 28, 28) and data.test_x.shape == (10, 1, 28, 28)
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    assert (data.test_x[:, 0].numpy() == arrays[IDX_NAMES[2]]).all()
    assert data.train_y.tolist() == (np.arange(20) % 10).tolist()
    assert data.classes == [str(d) for d in range(10)] and data.num_classes == 10
    assert not (tmp_path / "unused").exists()  # nothing downloaded or cached


def test_data_dir_accepts_uncompressed_files(tmp_path):
    arrays = write_fake_mnist(tmp_path, compress=False)
    data = load_images(DataConfig(name="fashion-mnist", data_dir=str(tmp_path), verify=False))
    assert (data.train_x[:, 0].numpy() == arrays[IDX_NAMES[0]]).all()
    assert data.classes[0] == "T-shirt/top"


def test_data_dir_missing_files_are_named(tmp_path):
    write_fake_mnist(tmp_path)
    for name in IDX_NAMES[1::2]:
        (tmp_path / name).unlink()
    with pytest.raises(DataError) as err:
        load_images(DataConfig(name="mnist", data_dir=str(tmp_path)))
    msg = str(err.value)
    assert str(tmp_path) in msg
    assert IDX_NAMES[1] in msg and IDX_NAMES[3] in msg
    assert IDX_NAMES[0] not in msg and IDX_NAMES[2] not in msg


def test_data_dir_that_is_not_a_folder(tmp_path):
    with pytest.raises(DataError, match="nowhere.*not a folder"):
        load_images(DataConfig(name="mnist", data_dir=str(tmp_path / "nowhere")))


def test_images_and_labels_must_agree(tmp_path):
    write_fake_mnist(tmp_path, n_train=20)
    (tmp_path / IDX_NAMES[1]).write_bytes(encode_idx(np.zeros(19, np.uint8), compress=True))
    with pytest.raises(DataError, match="20 images but .* 19 labels"):
        load_images(DataConfig(name="mnist", data_dir=str(tmp_path), verify=False))


def test_wrong_image_size_is_refused(tmp_path):
    write_fake_mnist(tmp_path)
    (tmp_path / IDX_NAMES[2]).write_bytes(encode_idx(np.zeros((10, 32, 32), np.uint8), compress=True))
    with pytest.raises(DataError, match="32x32 images, expected 28x28"):
        load_images(DataConfig(name="mnist", data_dir=str(tmp_path), verify=False))


def test_shared_options_apply(tmp_path):
    write_fake_mnist(tmp_path, n_train=30)
    cfg = DataConfig(name="mnist", data_dir=str(tmp_path), image_size=16, channels=3, max_train=12, verify=False)
    data = load_images(cfg)
    assert data.train_x.shape == (12, 3, 16, 16) and data.test_x.shape == (10, 3, 16, 16)
    assert data.train_x.is_contiguous() and data.channels == 3 and data.image_size == 16
    assert torch.equal(data.train_x[:, 0], data.train_x[:, 2])  # gray → RGB repeats the channel
    assert load_images(cfg).train_y.equal(data.train_y)  # max_train subset is seeded
    other = load_images(DataConfig(name="mnist", data_dir=str(tmp_path), max_train=12, split_seed=1, verify=False))
    assert not other.train_y.equal(data.train_y)


def test_real_mnist(mnist_dir):
    data = load_images(DataConfig(name="mnist", data_dir=str(mnist_dir)))
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_x.dtype == torch.uint8 and data.train_x.is_contiguous()
    assert torch.bincount(data.train_y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(data.test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert data.train_x.double().mean().item() == pytest.approx(33.318, abs=1e-3)
    assert data.test_x.double().mean().item() == pytest.approx(33.791, abs=1e-3)


def test_real_mnist_is_refused_as_fashion_mnist(mnist_dir):
    with pytest.raises(DataError) as err:
        load_images(DataConfig(name="fashion-mnist", data_dir=str(mnist_dir)))
    assert str(err.value) == (f"{mnist_dir / IDX_NAMES[0]} is mnist's {IDX_NAMES[0]}, not fashion-mnist's; point "
                              f"--data-dir at fashion-mnist's files, or pass --no-verify to use your own variant")
    data = load_images(DataConfig(name="fashion-mnist", data_dir=str(mnist_dir), verify=False))
    assert data.train_x.shape == (60000, 1, 28, 28) and data.classes[0] == "T-shirt/top"
