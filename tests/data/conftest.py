"""Fixtures of the data tests: tiny fake MNIST-format files (the local HTTP server is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genforge.data.idx import encode_idx

IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def write_fake_mnist(folder: Path, n_train: int = 20, n_test: int = 10, *, compress: bool = True,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Write the four MNIST files (28×28, labels cycling 0..9) into ``folder``; returns the arrays by file name."""
    rng = np.random.default_rng(seed)
    arrays = {
        IDX_NAMES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        IDX_NAMES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        IDX_NAMES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        IDX_NAMES[3]: (np.arange(n_test) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        (folder / (name if compress else name.removesuffix(".gz"))).write_bytes(encode_idx(a, compress=compress))
    return arrays
