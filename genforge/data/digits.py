"""``digits``: scikit-learn's bundled 8×8 handwritten digits (works offline).

1797 grayscale images, 10 classes, pixel values 0..16 in the original, scaled
here to 0..255. There is no official split: ``data.test_fraction`` and
``data.split_seed`` choose a stratified one.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from genforge.config import DataConfig

from .errors import DataError
from .imagedata import ImageData
from .transforms import split_indices

__all__ = ["load_digits"]

CLASSES = [str(d) for d in range(10)]


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """Pixels (0..16, float [1797, 64]) and labels [1797] from scikit-learn's data file.

    The CSV that ships inside scikit-learn is read directly: importing sklearn
    itself costs over a second of start-up for 120 KB of data.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset 'digits' ships with scikit-learn, which is not installed: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():  # a future layout: fall back to the public loader
        from sklearn.datasets import load_digits as sk_load_digits

        bunch = sk_load_digits()
        return bunch.data, bunch.target
    table = np.loadtxt(path, delimiter=",")  # [1797, 65]: 64 pixels then the label
    return table[:, :-1], table[:, -1].astype(np.int64)


def load_digits(cfg: DataConfig) -> ImageData:
    """Load and split the digits.

    Returns:
        ImageData with uint8 ``[N, 1, 8, 8]`` images (about 90/10 train/test by default)
        and labels 0..9.
    """
    if cfg.data_dir is not None:
        raise DataError(f"dataset 'digits' ships with scikit-learn and reads no files, but data_dir="
                        f"{cfg.data_dir} was given; drop --data-dir (or choose a dataset that uses it, e.g. mnist)")
    values, target = _read_digits()
    pixels = np.floor(values.reshape(-1, 8, 8) * (255.0 / 16.0) + 0.5).astype(np.uint8)  # 0..16 → 0..255, round half up
    x = torch.from_numpy(pixels).unsqueeze(1).contiguous()  # [1797, 1, 8, 8]
    y = torch.from_numpy(target.astype(np.int64))
    train, test = split_indices(len(y), cfg.test_fraction, cfg.split_seed, labels=y, what="digits")
    return ImageData(name=cfg.name, train_x=x[train].contiguous(), train_y=y[train], test_x=x[test].contiguous(),
                     test_y=y[test], classes=list(CLASSES))
