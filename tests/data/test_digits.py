"""``digits``: the offline default dataset, split by seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genforge.config import DataConfig
from genforge.data import DataError, load_images
from genforge.data.transforms import split_indices


@pytest.fixture(scope="module")
def digits():
    return load_images(DataConfig(name="digits"))


def rows(x: torch.Tensor, y: torch.Tensor) -> list[bytes]:
    return sorted(img.numpy().tobytes() + bytes([int(lab)]) for img, lab in zip(x, y))


def test_shapes_and_classes(digits):
    assert digits.train_x.shape[1:] == (1, 8, 8) and digits.test_x.shape[1:] == (1, 8, 8)
    assert len(digits.train_x) + len(digits.test_x) == 1797
    assert len(digits.test_x) == round(0.1 * 1797)
    assert digits.classes == [str(d) for d in range(10)] and digits.num_classes == 10
    assert digits.train_x.dtype == torch.uint8 and digits.train_y.dtype == torch.int64
    assert int(digits.train_x.max()) == 255 and int(digits.train_x.min()) == 0
    assert set(digits.test_y.tolist()) == set(range(10))  # stratified: every class in the test split


def test_split_is_disjoint_and_covers_everything(digits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    full = torch.from_numpy(np.floor(bunch.images * 255 / 16 + 0.5).astype(np.uint8)).unsqueeze(1)
    together = rows(torch.cat([digits.train_x, digits.test_x]), torch.cat([digits.train_y, digits.test_y]))
    assert together == rows(full, torch.from_numpy(bunch.target))
    train, test = split_indices(1797, 0.1, 0, labels=torch.from_numpy(bunch.target))
    assert set(train.tolist()).isdisjoint(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(1797))


def test_split_is_reproducible_by_seed(digits):
    again = load_images(DataConfig(name="digits"))
    assert again.train_x.equal(digits.train_x) and again.test_y.equal(digits.test_y)
    other = load_images(DataConfig(name="digits", split_seed=1, test_fraction=0.25))
    assert len(other.test_x) == round(0.25 * 1797)
    assert not other.test_x[:100].equal(digits.test_x[:100])


def test_data_dir_is_refused(tmp_path):
    with pytest.raises(DataError, match="drop --data-dir"):
        load_images(DataConfig(name="digits", data_dir=str(tmp_path)))
