"""Datasets, checksummed downloads and the in-memory batch stream.

    >>> from genforge.config import DataConfig
    >>> from genforge.data import BatchStream, load_images
    >>> data = load_images(DataConfig(name="mnist", image_size=32))   # downloads once, then cached
    >>> data.train_x.shape, data.num_classes                            # uint8 [60000, 1, 32, 32], 10
    >>> batches = BatchStream(data.train_x, data.train_y, 64, seed=0)
    >>> next(batches)["x"].shape                                        # uint8 [64, 1, 32, 32]

Modules: ``registry`` (DATASETS, load_images, list_datasets), ``digits``,
``mnist`` (MNIST-format IDX datasets), ``imagefolder``, ``download``
(mirrors + checksums), ``idx`` (file format), ``transforms`` (resize, channels,
splits), ``stream`` (BatchStream), ``cache`` (where downloads go).

Layer rule: imports only ``genforge.config`` and ``genforge.io`` from genforge.
"""

from .cache import default_cache_dir
from .errors import DataError
from .imagedata import ImageData
from .registry import DATASETS, DatasetInfo, list_datasets, load_images
from .stream import BatchStream

__all__ = [
    "DataError",
    "ImageData",
    "load_images",
    "BatchStream",
    "DATASETS",
    "DatasetInfo",
    "list_datasets",
    "default_cache_dir",
]
