"""``load_text``: a text corpus → tokenizer + train/val token ids, the one entry point for text data.

    >>> from genforge.config import DataConfig
    >>> from genforge.data import TokenBatches, load_text
    >>> data = load_text(DataConfig(name="tinyshakespeare"))    # downloads and tokenizes once, then cached
    >>> data.vocab_size, len(data.train), len(data.val)           # 65, 1003854, 111540
    >>> next(TokenBatches(data.train, 256, 64, seed=0))["x"].shape   # int64 [64, 257]

Sources: ``tinyshakespeare`` (downloaded with a checksum into the cache, or
``input.txt`` read from ``data.data_dir``, checked against the same checksum
unless ``data.verify`` is false, i.e. ``--no-verify`` for your own variant) and
``text:PATH`` for a file, a folder of ``*.txt`` files or a glob (see
:mod:`genforge.data.corpus`).

Split: contiguous, as nanoGPT's. The first ``int(n * (1 - test_fraction))``
characters of the corpus are the training split and the rest is validation,
so the boundary falls between two characters and depends on nothing random
(``split_seed`` is not used for text). Each split is tokenized on its own.

Tokenizer (``data.tokenizer``): ``char`` (vocabulary = characters of the whole
corpus), ``byte`` (any bytes, even invalid UTF-8) or ``bpe`` (byte-level, trained
on the training split with ``data.vocab_size`` tokens). See
:mod:`genforge.data.tokenizers` and, for the cache, :mod:`genforge.data.tokencache`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genforge.config import DataConfig

from .cache import default_cache_dir
from .corpus import SourceFile, find_text_files
from .download import download_file, verify_file, verify_local_file
from .errors import DataError
from .registry import DATASETS, TEXT_DATASETS, TEXT_PREFIX, TextDatasetInfo, known_files, unknown_dataset
from .tokencache import open_or_build
from .tokenizers import Tokenizer

__all__ = ["TextData", "load_text", "text_sources"]


@dataclass(frozen=True)
class TextData:
    """A tokenized corpus.

    Attributes:
        name: ``data.name``.
        tokenizer: encodes prompts and decodes samples; saved next to a model.
        train: 1-D token ids of the training split, uint16 (vocab <= 65535) or
            uint32, memory-mapped read-only from the cache.
        val: the validation split, likewise.
        train_chars: unicode characters in the training split (for bits per character).
        val_chars: characters in the validation split.
        sources: the corpus files, in order.
        cache_path: the cache folder holding the ids.
    """

    name: str
    tokenizer: Tokenizer
    train: np.ndarray
    val: np.ndarray
    train_chars: int
    val_chars: int
    sources: tuple[SourceFile, ...] = ()
    cache_path: Path | None = None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def summary(self) -> dict[str, Any]:
        """Plain numbers for logs: tokens and characters per split, vocabulary, tokenizer kind."""
        return {"name": self.name, "tokenizer": self.tokenizer.kind, "vocab_size": self.vocab_size,
                "train_tokens": int(self.train.size), "val_tokens": int(self.val.size),
                "train_chars": self.train_chars, "val_chars": self.val_chars}


def _builtin_file(info: TextDatasetInfo, cfg: DataConfig, cache_dir: Path, download: bool,
                  progress: bool) -> Path:
    """The corpus file of a built-in dataset: from ``data_dir`` (verified unless ``cfg.verify`` is false), the
    cache (verified) or a download."""
    name = info.file.name
    if cfg.data_dir is not None:
        folder = Path(cfg.data_dir).expanduser()
        if not (folder / name).is_file():
            raise DataError(f"data_dir {folder} lacks {name} of dataset {info.name!r}; put the file there or drop "
                            f"--data-dir to download it")
        if cfg.verify:
            verify_local_file(folder / name, info.file, info.name, known_files())
        return folder / name
    folder = cache_dir / info.name
    path = folder / name
    if path.is_file():
        verify_file(path, info.file)
        return path
    urls = ", ".join(m.rstrip("/") + "/" + name for m in info.mirrors)
    hint = f"Download {name} by hand ({urls}) into {folder}, or pass --data-dir DIR with a folder that holds it."
    if not download:
        raise DataError(f"dataset {info.name!r} is not in the cache ({path} is missing) and downloads are off. {hint}")
    return download_file(info.file, folder, info.mirrors, progress=progress, hint=hint)


def text_sources(cfg: DataConfig, *, cache_dir: Path | None = None, download: bool = True,
                 progress: bool = True) -> list[SourceFile]:
    """The files of the corpus ``cfg.name`` (downloading a built-in one when needed), checksummed.

    Raises:
        DataError: unknown name (with the closest suggestion), an image
            dataset, or any problem of :func:`genforge.data.corpus.find_text_files`.
    """
    name = cfg.name
    if name.startswith(TEXT_PREFIX + ":"):
        spec = name[len(TEXT_PREFIX) + 1:]
        if not spec:
            raise DataError("text: needs a path, e.g. text:./my_book.txt, text:./books/ or text:'./notes/**/*.md'")
        return find_text_files(spec)
    info = TEXT_DATASETS.get(name)
    if info is None:
        if name in DATASETS or name.startswith("imagefolder"):
            raise DataError(f"dataset {name!r} holds images, not text; a text model needs tinyshakespeare or "
                            f"text:PATH")
        raise unknown_dataset(name)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return find_text_files(str(_builtin_file(info, cfg, root, download, progress)))


def load_text(cfg: DataConfig, *, cache_dir: Path | None = None, download: bool = True,
              progress: bool = True) -> TextData:
    """Load, split and tokenize the text corpus described by ``cfg``; cached after the first call.

    Args:
        cfg: ``data`` section: ``name`` (``tinyshakespeare`` or ``text:PATH``),
            ``tokenizer`` (char/byte/bpe), ``vocab_size`` (bpe only),
            ``test_fraction`` (validation share at the end of the corpus),
            ``data_dir`` (read a built-in corpus from this folder), ``verify``
            (check that file against the corpus's checksum).
        cache_dir: cache root (downloads in ``<root>/<dataset>/``, token ids in
            ``<root>/tokens/``); default :func:`default_cache_dir`.
        download: fetch a missing built-in corpus; False makes it a DataError.
        progress: report downloads and first-time tokenization on stderr.

    Returns:
        TextData with memory-mapped ``train``/``val`` ids and their character counts.

    Raises:
        DataError: unknown name, missing/empty/binary file, a ``data_dir`` file
            that is not the corpus (with ``verify``), invalid UTF-8 (file and byte
            offset; not with ``byte``), failed download or checksum …
    """
    files = text_sources(cfg, cache_dir=cache_dir, download=download, progress=progress)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache = open_or_build(files, cfg.tokenizer, cfg.vocab_size, cfg.test_fraction, root / "tokens",
                          label=cfg.name, progress=progress)
    chars = cache.meta["chars"]
    return TextData(name=cfg.name, tokenizer=cache.tokenizer, train=cache.ids["train"], val=cache.ids["val"],
                    train_chars=int(chars["train"]), val_chars=int(chars["val"]), sources=tuple(files),
                    cache_path=cache.path)
