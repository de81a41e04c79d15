"""A text corpus on disk: which files, their checksums, and their text streamed in pieces.

``text:PATH`` accepts:

- a file: that file. Empty, binary (holding a NUL byte) or missing → DataError.
- a folder: every ``*.txt`` file below it (recursively, case-insensitive
  suffix, hidden files and folders skipped), in sorted order of the relative
  path. Only ``.txt`` so that READMEs of other types, images and editor
  droppings are not trained on by accident; use a glob for other suffixes.
  Binary and empty files are skipped with one warning naming them.
- a glob (``*``, ``?``, ``[``; ``**`` recurses): the matching files, sorted,
  skipped like a folder's.

Folders and globs are walked without following symbolic links to folders (a link
loop cannot make the walk endless), over at most :data:`MAX_ENTRIES` entries, and
name at most :data:`MAX_FILES` files; more is a DataError.

The corpus is the files' texts joined with one ``"\\n"`` between files. Text is
decoded as strict UTF-8 (no BOM stripping, no newline or Unicode
normalisation); an invalid byte is a DataError naming the file and byte
offset, except with ``errors="surrogateescape"`` (the byte tokenizer), where
every undecodable byte becomes one lone-surrogate character and round-trips.
Nothing here holds a whole corpus in memory: files are read 4 MiB at a time.
"""

from __future__ import annotations

import codecs
import fnmatch
import hashlib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .errors import DataError

__all__ = ["SourceFile", "find_text_files", "iter_corpus", "count_corpus", "split_pieces", "safe_chunks",
           "train_size", "SEPARATOR"]

SEPARATOR = "\n"  # between two files of a corpus
_READ = 4 << 20  # bytes per read
_GLOB_CHARS = frozenset("*?[")
MAX_FILES = 100_000  # files of one corpus
MAX_ENTRIES = 1_000_000  # folder entries looked at to find them


@dataclass(frozen=True)
class SourceFile:
    """One file of a corpus.

    Attributes:
        path: absolute path.
        size: bytes.
        sha256: hex digest of the file's bytes.
    """

    path: Path
    size: int
    sha256: str

    def to_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "size": self.size, "sha256": self.sha256}


def _walk(top: Path, spec: str, max_depth: int | None = None) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """``(path, parts relative to top)`` of every file below ``top``, hidden folders skipped, symbolic links to
    folders not followed, at most ``max_depth`` folders down; more than :data:`MAX_ENTRIES` is a DataError."""
    seen = 0
    for folder, dirs, files in os.walk(top, followlinks=False):
        rel = Path(folder).relative_to(top).parts
        seen += len(dirs) + len(files)
        if seen > MAX_ENTRIES:
            raise DataError(f"{spec}: more than {MAX_ENTRIES} entries to look through; name a smaller folder")
        deeper = max_depth is None or len(rel) + 1 < max_depth
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if deeper else []
        for name in files:
            yield Path(folder) / name, (*rel, name)


def _match(parts: tuple[str, ...], pats: tuple[str, ...]) -> bool:
    """Whether path ``parts`` match glob components ``pats`` (``**`` = any number of folders; a name
    starting with a dot is matched only by a component that starts with one, as ``glob``)."""
    if not pats:
        return not parts
    if pats[0] == "**":
        return any(_match(parts[i:], pats[1:]) for i in range(len(parts) + 1)
                   if not any(p.startswith(".") for p in parts[:i]))
    if not parts or (parts[0].startswith(".") and not pats[0].startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], pats[0]) and _match(parts[1:], pats[1:])


def _glob(spec: str, path: Path) -> list[Path]:
    """The files matching the glob ``path``, found by :func:`_walk` from its longest folder without wildcards."""
    parts = path.parts
    fixed = next(i for i, part in enumerate(parts) if _GLOB_CHARS & set(part))
    top, pats = Path(*parts[:fixed]) if fixed else Path("."), parts[fixed:]
    if not top.is_dir():
        return []
    depth = None if "**" in pats else len(pats)
    return sorted(p for p, rel in _walk(top, spec, depth) if _match(rel, pats) and p.is_file())


def _candidates(spec: str) -> tuple[list[Path], bool]:
    """Paths named by ``spec`` and whether they come from a folder/glob (True) or one file (False)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path], False
    if path.is_dir():
        files = sorted((p for p, rel in _walk(path, spec) if p.suffix.lower() == ".txt" and p.is_file()
                        and not rel[-1].startswith(".")), key=lambda p: p.relative_to(path).as_posix())
        if not files:
            raise DataError(f"folder {path} holds no .txt files; put text files there, or name other files with "
                            f"a glob such as text:{path}/**/*.md")
    elif _GLOB_CHARS & set(spec):
        files = _glob(spec, path)
        if not files:
            raise DataError(f"the pattern {spec!r} matches no file")
    elif path.exists():
        raise DataError(f"{path} is neither a file nor a folder")
    else:
        raise DataError(f"text file or folder {path} does not exist")
    if len(files) > MAX_FILES:
        raise DataError(f"{spec} names {len(files)} files, more than a corpus may hold ({MAX_FILES}); "
                        f"concatenate them or name fewer")
    return files, True


def _scan(path: Path) -> tuple[SourceFile, bool]:
    """Checksum and size of ``path`` and whether it holds a NUL byte (binary)."""
    h, size, binary = hashlib.sha256(), 0, False
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_READ):
                h.update(chunk)
                size += len(chunk)
                binary = binary or b"\0" in chunk
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    return SourceFile(path.resolve(), size, h.hexdigest()), binary


def find_text_files(spec: str) -> list[SourceFile]:
    """The files of the corpus ``spec`` (the PATH of ``text:PATH``), checksummed.

    Raises:
        DataError: missing path, no files, a single file that is empty or
            binary, or a folder/glob whose every file is.
    """
    paths, many = _candidates(spec)
    kept, skipped = [], []
    for path in paths:
        src, binary = _scan(path)
        problem = "binary (holds NUL bytes)" if binary else "empty" if src.size == 0 else None
        if problem is None:
            kept.append(src)
        elif not many:
            what = "it is not text" if binary else "there is nothing to train on"
            raise DataError(f"{path} is {problem}: {what}; give a UTF-8 text file")
        else:
            skipped.append(f"{path} ({problem})")
    if skipped:
        warnings.warn(f"{spec}: skipping {len(skipped)} file(s) that are not text: {'; '.join(skipped)}",
                      stacklevel=2)
    if not kept:
        raise DataError(f"{spec} holds no usable text: every file is empty or binary")
    return kept


def _iter_file(path: Path, errors: str) -> Iterator[str]:
    """The text of ``path`` in pieces; strict UTF-8 errors become a DataError with the byte offset."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors=errors)
    offset = 0  # bytes handed to the decoder so far
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    with f:
        while True:
            chunk = f.read(_READ)
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                at = offset - pending + e.start
                bad = e.object[e.start:e.start + 4]
                raise DataError(f"{path} is not valid UTF-8: byte offset {at} starts the invalid sequence "
                                f"{bad!r}; convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8), or set "
                                f"data.tokenizer=byte, which accepts any bytes") from None
            offset += len(chunk)
            if text:
                yield text
            if not chunk:
                return


def iter_corpus(files: Iterable[SourceFile], errors: str = "strict") -> Iterator[str]:
    """The corpus text in pieces of up to a few million characters, files joined by :data:`SEPARATOR`.

    Args:
        files: the corpus files, in order.
        errors: ``"strict"`` (DataError on invalid UTF-8) or ``"surrogateescape"``.
    """
    for i, src in enumerate(files):
        if i:
            yield SEPARATOR
        yield from _iter_file(src.path, errors)


def count_corpus(files: Iterable[SourceFile], errors: str = "strict", *,
                 charset: bool = False) -> tuple[int, set[str]]:
    """Characters in the corpus and (with ``charset``) the set of them; also validates the UTF-8."""
    n, chars = 0, set()
    for piece in iter_corpus(files, errors):
        n += len(piece)
        if charset:
            chars.update(piece)
    return n, chars


def train_size(total_chars: int, test_fraction: float) -> int:
    """Characters of the training split: ``int(total * (1 - test_fraction))``, as nanoGPT's ``int(n * 0.9)``."""
    return int(total_chars * (1.0 - test_fraction))


def split_pieces(pieces: Iterable[str], n_train: int) -> Iterator[tuple[str, str]]:
    """``(split, piece)`` with split ``"train"`` for the first ``n_train`` characters, ``"val"`` after."""
    seen = 0
    for piece in pieces:
        if seen >= n_train:
            yield "val", piece
        elif seen + len(piece) <= n_train:
            yield "train", piece
        else:
            cut = n_train - seen
            yield "train", piece[:cut]
            yield "val", piece[cut:]
        seen += len(piece)


# A letter or digit followed by a space or newline. Cutting there never splits a pre-token of the
# GPT-2 / ByteLevel regex ('s|'t|…| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+): the token
# holding the letter ends before the whitespace, and the whitespace run starts a new one whose
# lookahead only ever sees characters after it. So BPE over the chunks equals BPE over the whole.
_SAFE_CUT = re.compile(r"[^\W_][ \n]")


def safe_chunks(pieces: Iterable[str], size: int = 1 << 20) -> Iterator[str]:
    """Regroup text pieces into chunks of about ``size`` characters cut only where BPE pre-tokens end.

    The concatenation of the chunks equals that of the pieces. Text without a
    single letter-then-whitespace over ``4 * size`` characters is cut at that
    length anyway (pre-tokenisation may then differ at that one point).
    """
    buf = ""
    for piece in pieces:
        buf += piece
        while len(buf) >= size:
            m = _SAFE_CUT.search(buf, size - 1)
            if m is None and len(buf) < 4 * size:
                break
            cut = m.start() + 1 if m is not None else 4 * size
            yield buf[:cut]
            buf = buf[cut:]
    if buf:
        yield buf
