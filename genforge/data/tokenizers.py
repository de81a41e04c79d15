"""Text tokenizers: ``char``, ``byte`` and byte-level ``bpe``, one JSON file each.

    >>> tok = CharTokenizer.from_text("hello world")
    >>> tok.vocab_size, tok.encode("hello")          # 8, [3, 2, 4, 4, 5]
    >>> tok.save(run_dir); load_tokenizer(run_dir) == tok   # True

- ``char``: the vocabulary is the sorted set of characters of a corpus (as
  nanoGPT; Tiny Shakespeare gives 65). Encoding a character outside it raises
  a ValueError naming the character and its code point.
- ``byte``: the UTF-8 bytes of the text, vocabulary 256. Text read from files
  that are not valid UTF-8 arrives here with ``surrogateescape`` (each such byte
  a lone surrogate ``U+DC80..U+DCFF``), so any file round-trips byte-exactly.
- ``bpe``: byte-level BPE trained with the ``tokenizers`` library (GPT-2 style:
  ByteLevel pre-tokenizer, no normalisation, ByteLevel decoder), so it encodes
  and decodes any text. Training is deterministic: the same texts give the same
  ``TOKENIZER_FILE`` (named by the run layout). The file is the library's own format, loadable elsewhere.

Decoding: every token of ``byte``/``bpe`` stands for a fixed byte string, and
:meth:`Tokenizer.decode` is the UTF-8 decoding (invalid sequences → U+FFFD) of
their concatenation. :meth:`Tokenizer.stream_decoder` gives the same text
piece by piece, holding back a character whose bytes have not all arrived.
For generation, :meth:`Tokenizer.utf8_guard` gives the mask of tokens that keep
a byte stream valid UTF-8 (see :mod:`genforge.data.utf8`), so samplers never
produce U+FFFD.
"""

from __future__ import annotations

import codecs
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from genforge.io import atomic_write_text
from genforge.rundir import TOKENIZER as TOKENIZER_FILE

from .errors import DataError
from .utf8 import Utf8Guard, transition_table

__all__ = ["Tokenizer", "CharTokenizer", "ByteTokenizer", "BPETokenizer", "StreamDecoder",
           "load_tokenizer", "make_tokenizer", "TOKENIZER_FILE", "KINDS"]

KINDS = ("char", "byte", "bpe")
_FORMAT = 1  # version of the char/byte JSON layout
MAX_FILE_BYTES = 64 << 20  # a tokenizer file; a 200k-token BPE is about 10 MiB
_T = TypeVar("_T")


def _native(what: str, call: Callable[[], _T]) -> _T:
    """``call()`` into the Rust ``tokenizers`` library, its panic (``pyo3_runtime.PanicException``, a
    ``BaseException`` matched by name: pyo3 exports no class) turned into one-line DataError."""
    try:
        return call()
    except BaseException as e:
        if type(e).__name__ != "PanicException" or not type(e).__module__.startswith("pyo3"):
            raise
        raise DataError(f"the tokenizers library failed while {what}: {' '.join(str(e).split())[:200]}") from None


class StreamDecoder:
    """Turns ids arriving one at a time into text, for printing tokens as they are generated.

    ``push(ids)`` returns the text completed so far; bytes of a character still
    incomplete are held back until its remaining bytes arrive (or ``flush``).
    The concatenation of every ``push`` and the final ``flush`` equals
    ``tokenizer.decode(all_ids)``.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, ids: int | Iterable[int]) -> str:
        """Add one id or several; returns the newly completed text (possibly "")."""
        ids = [ids] if isinstance(ids, (int, np.integer)) else list(ids)
        if isinstance(self._tok, CharTokenizer):
            return self._tok.decode(ids)
        return self._utf8.decode(self._tok.decode_bytes(ids))

    def flush(self, *, incomplete: str = "replace") -> str:
        """End of stream: the held-back bytes of an incomplete character as U+FFFD (``incomplete="replace"``,
        so that the pieces add up to ``decode``) or left out (``"drop"``: what a sampler that stopped in the
        middle of a character shows); "" when nothing is held back."""
        if incomplete not in ("replace", "drop"):
            raise ValueError(f"incomplete must be 'replace' or 'drop', got {incomplete!r}")
        if isinstance(self._tok, CharTokenizer):
            return ""
        if incomplete == "drop":
            self._utf8.reset()
            return ""
        return self._utf8.decode(b"", final=True)


class Tokenizer:
    """Common interface of the three tokenizers.

    Attributes:
        kind: ``"char"``, ``"byte"`` or ``"bpe"``.
        vocab_size: number of ids; ids are ``0 .. vocab_size - 1``.
    """

    kind: ClassVar[str]

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        return self.encode_array(text).tolist()

    def encode_array(self, text: str, dtype: Any = np.int64) -> np.ndarray:
        """Token ids of ``text`` as a 1-D numpy array of ``dtype`` (vectorised where possible)."""
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; raises ValueError for an id outside ``0 .. vocab_size - 1``."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The UTF-8 bytes that ``ids`` stand for (byte and bpe)."""
        raise NotImplementedError

    def stream_decoder(self) -> StreamDecoder:
        """A fresh :class:`StreamDecoder` for this tokenizer."""
        return StreamDecoder(self)

    def token_bytes(self) -> list[bytes] | None:
        """The byte string of every id (byte and bpe); None for ``char``, whose tokens are whole characters."""
        return [self.decode_bytes([i]) for i in range(self.vocab_size)]

    def utf8_guard(self, n: int, prompt: Sequence[int] = ()) -> Utf8Guard | None:
        """A :class:`~genforge.data.utf8.Utf8Guard` for ``n`` rows continuing ``prompt`` ids; None for ``char``
        (every sequence of characters is valid text). The token table is built once per tokenizer."""
        if self.__dict__.get("_utf8_table") is None:
            token_bytes = self.token_bytes()
            if token_bytes is None:
                return None
            self._utf8_table = transition_table(token_bytes)
        return Utf8Guard(self._utf8_table, n, prompt)

    def to_json(self) -> str:
        """The content of the tokenizer file (JSON)."""
        raise NotImplementedError

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/TOKENIZER_FILE`` atomically (creating ``directory``); returns its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / TOKENIZER_FILE
        atomic_write_text(path, self.to_json())
        return path

    def _check_ids(self, ids: Sequence[int]) -> None:
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise ValueError(f"token id {bad} is outside the {self.kind} vocabulary (ids 0..{self.vocab_size - 1})")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_json() == self.to_json()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class CharTokenizer(Tokenizer):
    """One id per character; ids follow code-point order of ``chars``.

    Args:
        chars: the vocabulary; stored sorted and de-duplicated.
    """

    kind = "char"

    def __init__(self, chars: Iterable[str]) -> None:
        chars = sorted(set(chars))
        if not chars:
            raise ValueError("a char tokenizer needs at least one character")
        wrong = [c for c in chars if len(c) != 1]
        if wrong:
            raise ValueError(f"char vocabulary entries must be single characters, got {wrong[:3]}")
        self.chars = chars
        self._codes = np.array([ord(c) for c in chars], dtype=np.uint32)  # sorted, so searchsorted looks up ids

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokenizer whose vocabulary is the characters of ``text``."""
        return cls(set(text))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode_array(self, text: str, dtype: Any = np.int64) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
        ids = np.searchsorted(self._codes, codes)
        found = self._codes[np.minimum(ids, len(self._codes) - 1)] == codes
        if not found.all():
            c = text[int(np.argmin(found))]
            raise ValueError(f"character {c!r} (U+{ord(c):04X}) is not in the char tokenizer's vocabulary of "
                             f"{self.vocab_size} characters (those of the corpus it was built from); remove it "
                             f"from the text or use a byte or bpe tokenizer")
        return ids.astype(dtype, copy=False)

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        return "".join(self.chars[i] for i in ids)

    def token_bytes(self) -> None:
        return None

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.decode(ids).encode("utf-8", errors="surrogatepass")

    def to_json(self) -> str:
        return json.dumps({"kind": "char", "format": _FORMAT, "chars": self.chars}, ensure_ascii=False, indent=1)


class ByteTokenizer(Tokenizer):
    """The UTF-8 bytes of the text; ids 0..255.

    ``encode`` turns lone surrogates U+DC80..U+DCFF back into the raw bytes
    they escape (Python's ``surrogateescape``), so files that are not UTF-8
    round-trip through :func:`genforge.data.text.load_text` exactly.
    """

    kind = "byte"

    @property
    def vocab_size(self) -> int:
        return 256

    def encode_array(self, text: str, dtype: Any = np.int64) -> np.ndarray:
        try:
            data = text.encode("utf-8", errors="surrogateescape")
        except UnicodeEncodeError as e:
            raise ValueError(f"text holds a lone surrogate {text[e.start]!r} at character {e.start}, which has "
                             f"no UTF-8 encoding") from None
        return np.frombuffer(data, dtype=np.uint8).astype(dtype)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        return bytes(ids)

    def to_json(self) -> str:
        return json.dumps({"kind": "byte", "format": _FORMAT, "vocab_size": 256}, indent=1)


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: the printable stand-in character of each byte → the byte."""
    keep = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + n)] = b
            n += 1
    return chars


class BPETokenizer(Tokenizer):
    """Byte-level BPE held by a ``tokenizers.Tokenizer``.

    Args:
        hf: a trained ``tokenizers.Tokenizer`` whose tokens are byte-level strings.
    """

    kind = "bpe"

    def __init__(self, hf: Any) -> None:
        self.hf = hf
        inverse = _unicode_to_byte()
        vocab = hf.get_vocab(with_added_tokens=True)
        table: list[bytes] = [b""] * len(vocab)
        for token, i in vocab.items():
            try:
                table[i] = bytes(inverse[c] for c in token)
            except (KeyError, IndexError):
                raise ValueError(f"token {token!r} (id {i}) is not a byte-level token; only byte-level BPE "
                                 f"tokenizers are supported") from None
        self._bytes = table

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2) -> BPETokenizer:
        """Train on ``texts`` (an iterable of strings, e.g. chunks of the training split).

        Args:
            texts: training text; chunk boundaries must not cut a pre-token
                (see :func:`genforge.data.corpus.safe_chunks`), or the result
                depends on the chunking.
            vocab_size: at most this many tokens: the 256 bytes plus merges;
                fewer when the text has fewer pairs occurring ``min_frequency`` times.
            min_frequency: a pair must occur this often to become a merge.
        """
        if vocab_size < 256:
            raise ValueError(f"a byte-level BPE vocabulary holds the 256 bytes, so vocab_size must be >= 256, "
                             f"got {vocab_size}")
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf)

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        return cls(_native("loading the tokenizer", lambda: HFTokenizer.from_str(text)))

    @property
    def vocab_size(self) -> int:
        return len(self._bytes)

    def encode_array(self, text: str, dtype: Any = np.int64) -> np.ndarray:
        enc = _native("encoding text", lambda: self.hf.encode(text, add_special_tokens=False))
        return np.asarray(enc.ids, dtype=dtype)

    def encode_many(self, texts: list[str], dtype: Any = np.int64) -> Iterator[np.ndarray]:
        """Encode several independent texts in one call (parallel inside the library)."""
        for enc in _native("encoding text", lambda: self.hf.encode_batch(texts, add_special_tokens=False)):
            yield np.asarray(enc.ids, dtype=dtype)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        return b"".join(self._bytes[i] for i in ids)

    def token_bytes(self) -> list[bytes]:
        return list(self._bytes)

    def to_json(self) -> str:
        return self.hf.to_str(pretty=True)


def make_tokenizer(kind: str, **kwargs: Any) -> Tokenizer:
    """``byte`` → ByteTokenizer(); ``char`` needs ``chars=``; ``bpe`` needs ``texts=`` and ``vocab_size=``."""
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char":
        return CharTokenizer(kwargs["chars"])
    if kind == "bpe":
        return BPETokenizer.train(kwargs["texts"], kwargs["vocab_size"])
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(KINDS)}")


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer saved by :meth:`Tokenizer.save`.

    Args:
        path: the directory holding ``TOKENIZER_FILE``, or the file itself.

    Raises:
        DataError: the file is missing, not JSON, or not a tokenizer; the message names it.
    """
    path = Path(path)
    file = path / TOKENIZER_FILE if path.is_dir() else path
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            raise DataError(f"{file} is {file.stat().st_size} bytes, more than a tokenizer may be ({MAX_FILE_BYTES})")
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"no tokenizer at {file}: the folder of a text run holds {TOKENIZER_FILE}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the tokenizer file {file}: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{file} is not valid JSON ({e}); it may be truncated") from None
    except RecursionError:
        raise DataError(f"{file} is nested too deeply to be a tokenizer") from None
    kind = data.get("kind") if isinstance(data, dict) else None
    try:
        if kind == "char":
            return CharTokenizer(data["chars"])
        if kind == "byte":
            return ByteTokenizer()
        if isinstance(data, dict) and isinstance(data.get("model"), dict) and data["model"].get("type") == "BPE":
            _check_bpe_file(data, file)
            return BPETokenizer.from_json(text)
    except DataError:
        raise
    except Exception as e:  # KeyError/TypeError/ValueError, or the library's plain Exception on a bad file
        raise DataError(f"{file} is not a valid {kind or 'bpe'} tokenizer: {e}") from None
    raise DataError(f"{file} is not a genforge tokenizer: expected kind 'char' or 'byte', or a byte-level BPE "
                    f"file of the tokenizers library")


def _regex(node: Any) -> str | None:
    """The first regular expression (``{"Regex": ...}``) anywhere in a tokenizers JSON section, else None."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("Regex"), str):
                return item["Regex"]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _check_bpe_file(data: dict[str, Any], file: Path) -> None:
    """Refuse what a genforge BPE never holds and what makes the library unsafe or sampling irreproducible:
    BPE dropout (random merges: the same seed would give other tokens) and regular expressions in the
    normalizer, pre-tokenizer or decoder (a catastrophic one makes the library panic on some texts; the
    byte-level pre-tokenizer genforge trains needs none, and plain string splits stay allowed)."""
    dropout = data["model"].get("dropout")
    if dropout not in (None, 0, 0.0):
        raise DataError(f"{file}: BPE dropout ({dropout!r}) makes the same seed give different tokens; "
                        f"set model.dropout to null in the file")
    for section in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        pattern = _regex(data.get(section))
        if pattern is not None:
            shown = pattern if len(pattern) <= 40 else pattern[:40] + "..."
            raise DataError(f"{file}: the {section} holds a regular expression ({shown!r}); genforge takes "
                            f"byte-level BPE with plain string splits only")
