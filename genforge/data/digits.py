"""``digits``: scikit-learn's bundled 8×8 handwritten digits (works offline).

1797 grayscale images, 10 classes, pixel values 0..16 in the original, scaled
here to 0..255. There is no official split: ``data.test_fraction`` and
``data.split_seed`` choose a stratified one.
"""

from __future__ import annotations

import numpy as np
import torch

from genforge.config import DataConfig

from .errors import DataError
from .imagedata import ImageData
from .transforms import split_indices

__all__ = ["load_digits"]

CLASSES = [str(d) for d in range(10)]


def load_digits(cfg: DataConfig) -> ImageData:
    """Load and split the digits.

    Returns:
        ImageData with uint8 ``[N, 1, 8, 8]`` images (about 90/10 train/test by default)
        and labels 0..9.
    """
    if cfg.data_dir is not None:
        raise DataError(f"dataset 'digits' ships with scikit-learn and reads no files, but data_dir="
                        f"{cfg.data_dir} was given; drop --data-dir (or choose a dataset that uses it, e.g. mnist)")
    try:
        from sklearn.datasets import load_digits as sk_load_digits  # lazy: sklearn is slow to import
    except ImportError:
        raise DataError("dataset 'digits' needs scikit-learn: pip install scikit-learn") from None
    bunch = sk_load_digits()
    pixels = np.floor(bunch.images * (255.0 / 16.0) + 0.5).astype(np.uint8)  # 0..16 → 0..255, round half up
    x = torch.from_numpy(pixels).unsqueeze(1).contiguous()  # [1797, 1, 8, 8]
    y = torch.from_numpy(bunch.target.astype(np.int64))
    train, test = split_indices(len(y), cfg.test_fraction, cfg.split_seed, labels=y, what="digits")
    return ImageData(name=cfg.name, train_x=x[train].contiguous(), train_y=y[train], test_x=x[test].contiguous(),
                     test_y=y[test], classes=list(CLASSES))
