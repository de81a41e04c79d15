"""Token ids of a corpus, encoded once and memory-mapped from the cache afterwards.

One folder per (corpus content, tokenizer kind, BPE vocab_size, validation
share) under ``<cache>/tokens/``::

    <kind>[<vocab>]-<16 hex of the key>/
        train.bin, val.bin   raw little-endian uint16 (vocab <= 65535) or uint32 ids
        meta.json            key, dtype, token and character counts, source files (path, size, sha256)
        (tokenizer file)     the tokenizer the ids were made with

The key hashes the sha256 of every source file in order, so renaming or moving
a file still hits and editing one misses. A folder is built in a temporary
sibling and renamed into place only when complete, so a crash never leaves a
half cache; a folder that fails the checks on opening (truncated ``.bin``,
unreadable ``meta.json``) is rebuilt with a warning. Encoding streams the
corpus in pieces, writing each piece's ids before reading the next.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

import numpy as np

from genforge import __version__

from .corpus import SourceFile, count_corpus, iter_corpus, safe_chunks, split_pieces, train_size
from .errors import DataError
from .tokenizers import TOKENIZER_FILE, BPETokenizer, ByteTokenizer, CharTokenizer, Tokenizer, load_tokenizer

__all__ = ["TokenCache", "cache_key", "open_or_build", "SPLITS"]

CACHE_FORMAT = 1
SPLITS = ("train", "val")
_BPE_CHUNK = 1 << 18  # characters per text handed to the BPE library
_BPE_BATCH = 16  # chunks per encode_batch call


@dataclass(frozen=True)
class TokenCache:
    """An opened cache folder.

    Attributes:
        path: the folder.
        tokenizer: the tokenizer the ids were made with.
        ids: ``{"train": ids, "val": ids}``, 1-D read-only ``np.memmap`` (a plain
            empty array for an empty split).
        meta: the parsed ``meta.json`` (``chars``, ``tokens``, ``sources`` …).
    """

    path: Path
    tokenizer: Tokenizer
    ids: dict[str, np.ndarray]
    meta: dict[str, Any]


class _Invalid(Exception):
    pass


def storage_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits (vocab_size <= 65535), else ``uint32``; little-endian."""
    return np.dtype("<u2") if vocab_size <= 65535 else np.dtype("<u4")


def cache_key(files: Iterable[SourceFile], kind: str, vocab_size: int, test_fraction: float) -> tuple[str, str]:
    """``(full sha256 key, folder name)`` of a corpus tokenized with ``kind``."""
    fields = {"format": CACHE_FORMAT, "files": [f.sha256 for f in files], "tokenizer": kind,
              "vocab_size": vocab_size if kind == "bpe" else None, "test_fraction": test_fraction}
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    return key, f"{kind}{vocab_size if kind == 'bpe' else ''}-{key[:16]}"


def _open(folder: Path, key: str) -> TokenCache:
    """Open a built folder; raises _Invalid with the reason when anything is off."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("key") != key or meta.get("format") != CACHE_FORMAT:
            raise _Invalid("meta.json belongs to another corpus or cache format")
        dtype = np.dtype(meta["dtype"])
        tokenizer = load_tokenizer(folder)
        if tokenizer.vocab_size != meta["vocab_size"]:
            raise _Invalid(f"{TOKENIZER_FILE} has {tokenizer.vocab_size} tokens, meta.json says {meta['vocab_size']}")
        ids = {}
        for split in SPLITS:
            path, count = folder / f"{split}.bin", int(meta["tokens"][split])
            size = path.stat().st_size
            if size != count * dtype.itemsize:
                raise _Invalid(f"{path.name} has {size} bytes, expected {count} {dtype.name} ids")
            ids[split] = np.memmap(path, dtype=dtype, mode="r") if count else np.zeros(0, dtype)
    except (OSError, ValueError, KeyError, TypeError, DataError) as e:  # JSONDecodeError is a ValueError
        raise _Invalid(str(e)) from None
    return TokenCache(folder, tokenizer, ids, meta)


def _train_tokenizer(files: list[SourceFile], kind: str, vocab_size: int, errors: str, n_train: int,
                     chars: set[str]) -> Tokenizer:
    if kind == "char":
        return CharTokenizer(chars)
    if kind == "byte":
        return ByteTokenizer()
    return BPETokenizer.train(safe_chunks(_split(files, errors, n_train, "train"), _BPE_CHUNK), vocab_size)


def _split(files: list[SourceFile], errors: str, n_train: int, split: str) -> Iterator[str]:
    """The text of one split in pieces (stops reading at the end of the training split)."""
    for which, piece in split_pieces(iter_corpus(files, errors), n_train):
        if which == split:
            yield piece
        elif split == "train":
            return


def _encode(tokenizer: Tokenizer, pieces: Iterator[str], dtype: np.dtype) -> Iterator[np.ndarray]:
    """Ids of the pieces, piece by piece; BPE in pre-token-safe chunks, several per library call."""
    if isinstance(tokenizer, BPETokenizer):
        chunks = safe_chunks(pieces, _BPE_CHUNK)
        while batch := list(islice(chunks, _BPE_BATCH)):
            yield from tokenizer.encode_many(batch, dtype=dtype)
    else:
        for piece in pieces:
            yield tokenizer.encode_array(piece, dtype=dtype)


def _write(ids: Iterator[np.ndarray], f: BinaryIO) -> int:
    n = 0
    for a in ids:
        f.write(a.tobytes())
        n += a.size
    f.flush()
    os.fsync(f.fileno())
    return n


def _build(folder: Path, key: str, files: list[SourceFile], kind: str, vocab_size: int,
           test_fraction: float) -> None:
    """Tokenize the corpus into a temporary folder beside ``folder``, then rename it onto ``folder``."""
    errors = "surrogateescape" if kind == "byte" else "strict"
    total, chars = count_corpus(files, errors, charset=kind == "char")  # validates the UTF-8 first
    if total == 0:
        raise DataError(f"the corpus {', '.join(str(f.path) for f in files)} holds no text")
    n_train = train_size(total, test_fraction)
    tokenizer = _train_tokenizer(files, kind, vocab_size, errors, n_train, chars)
    dtype = storage_dtype(tokenizer.vocab_size)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        tokens = {}
        for split in SPLITS:
            with open(tmp / f"{split}.bin", "wb") as f:
                tokens[split] = _write(_encode(tokenizer, _split(files, errors, n_train, split), dtype), f)
        tokenizer.save(tmp)
        meta = {"format": CACHE_FORMAT, "key": key, "genforge_version": __version__, "tokenizer": kind,
                "vocab_size": tokenizer.vocab_size, "dtype": dtype.str, "test_fraction": test_fraction,
                "tokens": tokens, "chars": {"train": n_train, "val": total - n_train},
                "sources": [f.to_dict() for f in files]}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from others
        if folder.exists():
            try:
                _open(folder, key)
                return  # a concurrent build finished first: keep it, drop ours
            except _Invalid:
                shutil.rmtree(folder, ignore_errors=True)  # the damaged old build
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.is_dir():  # not a concurrent build that got there first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def open_or_build(files: list[SourceFile], kind: str, vocab_size: int, test_fraction: float, root: Path, *,
                  label: str = "", progress: bool = True) -> TokenCache:
    """The token cache of ``files``: opened when present and intact, else built first.

    Args:
        files: the corpus files in order (see :func:`genforge.data.corpus.find_text_files`).
        kind: ``"char"``, ``"byte"`` or ``"bpe"``.
        vocab_size: BPE vocabulary size (ignored for char and byte).
        test_fraction: share of the characters at the end of the corpus that form the validation split.
        root: the ``tokens`` folder of the cache.
        label: dataset name for messages.
        progress: say on stderr when a corpus is being tokenized.

    Raises:
        DataError: invalid UTF-8 (not with byte), an empty corpus, an unwritable cache.
    """
    key, name = cache_key(files, kind, vocab_size, test_fraction)
    folder = root / name
    if folder.is_dir():
        try:
            return _open(folder, key)
        except _Invalid as e:
            warnings.warn(f"rebuilding the damaged token cache {folder}: {e}", stacklevel=3)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the token cache folder {root} ({e}); set GENFORGE_CACHE to a writable "
                        f"folder") from None
    if progress:
        print(f"tokenizing {label or files[0].path} ({kind}) into {folder}", file=sys.stderr, flush=True)
    try:
        _build(folder, key, files, kind, vocab_size, test_fraction)
    except OSError as e:
        raise DataError(f"cannot write the token cache {folder} ({e}); free some space or set GENFORGE_CACHE to "
                        f"another folder") from None
    try:
        return _open(folder, key)
    except _Invalid as e:
        raise DataError(f"the token cache {folder} was just written but does not read back: {e}") from None
