"""Datasets, checksummed downloads, tokenizers and the batch streams.

    >>> from genforge.config import DataConfig
    >>> from genforge.data import BatchStream, load_images
    >>> data = load_images(DataConfig(name="mnist", image_size=32))   # downloads once, then cached
    >>> data.train_x.shape, data.num_classes                            # uint8 [60000, 1, 32, 32], 10
    >>> batches = BatchStream(data.train_x, data.train_y, 64, seed=0)
    >>> next(batches)["x"].shape                                        # uint8 [64, 1, 32, 32]

    >>> text = load_text(DataConfig(name="tinyshakespeare"))            # char tokens, cached
    >>> next(TokenBatches(text.train, 256, 64, seed=0))["x"].shape      # int64 [64, 257]

Modules: ``registry`` (DATASETS, TEXT_DATASETS, load_images, list_datasets),
``digits``, ``mnist`` (MNIST-format IDX datasets), ``imagefolder``,
``download`` (mirrors + checksums), ``idx`` (file format), ``transforms``
(resize, channels, splits), ``stream`` (BatchStream), ``cache`` (where
downloads go); for text ``text`` (load_text), ``corpus`` (files, UTF-8,
split), ``tokenizers`` (char/byte/bpe), ``utf8`` (tokens that keep generated
bytes valid UTF-8), ``tokencache`` (memory-mapped ids),
``tokenstream`` (TokenBatches, eval_windows).

Layer rule: imports only ``genforge.config`` and ``genforge.io`` from genforge.
"""

from .cache import default_cache_dir
from .errors import DataError
from .imagedata import ImageData
from .imagefolder import read_image
from .registry import DATASETS, TEXT_DATASETS, DatasetInfo, is_text_dataset, list_datasets, load_images
from .stream import BatchStream
from .text import TextData, load_text
from .tokenizers import Tokenizer, load_tokenizer
from .tokenstream import TokenBatches, eval_windows

__all__ = [
    "DataError",
    "ImageData",
    "load_images",
    "read_image",
    "BatchStream",
    "DATASETS",
    "DatasetInfo",
    "list_datasets",
    "default_cache_dir",
    "TEXT_DATASETS",
    "is_text_dataset",
    "TextData",
    "load_text",
    "Tokenizer",
    "load_tokenizer",
    "TokenBatches",
    "eval_windows",
]
