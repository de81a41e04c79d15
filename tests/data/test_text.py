"""load_text: sources, the contiguous split, the token cache, bad input, Tiny Shakespeare."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from genforge.config import DataConfig
from genforge.data import (TEXT_DATASETS, DataError, is_text_dataset, list_datasets, load_images, load_text,
                           load_tokenizer)
from genforge.data import corpus, tokencache
from genforge.data.download import RemoteFile


TEXT = ("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 8
        + "naïve 日本 🙂\n")


def load(path, tmp_path, **cfg) -> object:
    return load_text(DataConfig(name=f"text:{path}", **cfg), cache_dir=tmp_path / "cache", progress=False)


def decoded(data) -> tuple[str, str]:
    tok = data.tokenizer
    return tok.decode(data.train.tolist()), tok.decode(data.val.tolist())


@pytest.fixture
def book(tmp_path) -> Path:
    path = tmp_path / "book.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_split_is_the_contiguous_tail(book, tmp_path, kind):
    data = load(book, tmp_path, tokenizer=kind, vocab_size=300, test_fraction=0.25)
    n_train = int(len(TEXT) * 0.75)
    assert (data.train_chars, data.val_chars) == (n_train, len(TEXT) - n_train)
    assert decoded(data) == (TEXT[:n_train], TEXT[n_train:])
    assert data.train.dtype == np.uint16 and isinstance(data.train, np.memmap) and data.train.ndim == 1
    assert data.vocab_size == data.tokenizer.vocab_size == {"char": len(set(TEXT)), "byte": 256, "bpe": 300}[kind]
    assert data.name == f"text:{book}" and data.tokenizer.kind == kind


def test_char_vocabulary_covers_the_whole_corpus(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("aaaaaaaaab" * 9 + "xyz", encoding="utf-8")  # x, y, z only in the validation tail
    data = load(path, tmp_path)
    assert data.tokenizer.chars == ["a", "b", "x", "y", "z"]
    assert data.tokenizer.decode(data.val.tolist()).endswith("xyz")


def test_folder_is_every_txt_file_sorted_and_joined(tmp_path):
    root = tmp_path / "books"
    (root / "b" / "deep").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "b" / "deep" / "3.TXT").write_text("three")
    (root / "b" / "2.txt").write_text("two\n")
    (root / "1.txt").write_text("one")
    (root / "notes.md").write_text("ignored")
    (root / ".hidden" / "0.txt").write_text("ignored")
    (root / "empty.txt").write_text("")
    (root / "blob.txt").write_bytes(b"\x89PNG\x00\x01")
    with pytest.warns(UserWarning, match=r"blob\.txt \(binary.*empty\.txt \(empty\)"):
        data = load(root, tmp_path, test_fraction=0.5)
    assert "".join(decoded(data)) == "one\ntwo\n\nthree"
    assert [s.path.name for s in data.sources] == ["1.txt", "2.txt", "3.TXT"]


def test_glob_selects_files(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.md").write_text("alpha")
    (tmp_path / "d" / "b.md").write_text("beta")
    (tmp_path / "d" / "c.txt").write_text("gamma")
    data = load(tmp_path / "d" / "*.md", tmp_path, test_fraction=0.5)
    assert "".join(decoded(data)) == "alpha\nbeta"


@pytest.mark.parametrize("setup,message", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_text(""), "is empty"),
    (lambda p: p.write_bytes(b"text\x00more"), "is binary"),
])
def test_bad_single_file_is_named(tmp_path, setup, message):
    path = tmp_path / "bad.txt"
    setup(path)
    with pytest.raises(DataError, match=message) as err:
        load(path, tmp_path)
    assert str(path) in str(err.value)


def test_folder_without_text_says_so(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.png").write_bytes(b"png")
    with pytest.raises(DataError, match="holds no .txt files"):
        load(tmp_path / "d", tmp_path)
    (tmp_path / "d" / "x.txt").write_bytes(b"\x00\x00")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="holds no usable text"):
        load(tmp_path / "d", tmp_path)
    with pytest.raises(DataError, match="matches no file"):
        load(tmp_path / "*.nothing", tmp_path)
    with pytest.raises(DataError, match="needs a path"):
        load_text(DataConfig(name="text:"))


def test_invalid_utf8_names_file_and_byte_offset(tmp_path, monkeypatch):
    path = tmp_path / "latin1.txt"
    path.write_bytes("abc é".encode() + b" caf\xe9 x")
    with pytest.raises(DataError, match=rf"{path} is not valid UTF-8: byte offset 10 .*tokenizer=byte"):
        load(path, tmp_path)
    monkeypatch.setattr(corpus, "_READ", 3)  # the bad sequence spans reads; offsets still count from the start
    path.write_bytes("ab\u00e9cd".encode() + b"\xe6\x97")
    with pytest.raises(DataError, match=r"byte offset 6 "):
        load(path, tmp_path)


def test_byte_tokenizer_takes_any_bytes(tmp_path):
    raw = b"caf\xe9 \xff\xfe and UTF-8 \xc3\xa9 " * 10
    path = tmp_path / "any.bin.txt"
    path.write_bytes(raw)
    data = load(path, tmp_path, tokenizer="byte")
    ids = np.concatenate([data.train, data.val])
    assert ids.tobytes() == np.frombuffer(raw, np.uint8).astype("<u2").tobytes()
    assert data.train_chars + data.val_chars == len(raw.decode("utf-8", "surrogateescape"))


def test_cache_hit_reads_without_encoding(book, tmp_path, monkeypatch):
    first = load(book, tmp_path, tokenizer="bpe", vocab_size=300)
    bins = sorted(first.cache_path.glob("*.bin"))
    stamps = [p.stat().st_mtime_ns for p in bins]

    def fail(*args, **kwargs):
        raise AssertionError("re-encoded")

    monkeypatch.setattr(tokencache, "_build", fail)
    again = load(book, tmp_path, tokenizer="bpe", vocab_size=300)
    assert np.array_equal(again.train, first.train) and np.array_equal(again.val, first.val)
    assert again.tokenizer == first.tokenizer and again.cache_path == first.cache_path
    assert [p.stat().st_mtime_ns for p in bins] == stamps
    moved = tmp_path / "elsewhere.txt"
    book.rename(moved)  # the key is the content, not the path
    assert np.array_equal(load(moved, tmp_path, tokenizer="bpe", vocab_size=300).train, first.train)


def test_cache_layout_and_keys(book, tmp_path):
    data = load(book, tmp_path)
    assert sorted(p.name for p in data.cache_path.iterdir()) == ["meta.json", "tokenizer.json", "train.bin", "val.bin"]
    assert data.cache_path.parent == tmp_path / "cache" / "tokens"
    assert load_tokenizer(data.cache_path) == data.tokenizer
    others = {load(book, tmp_path, **cfg).cache_path for cfg in (
        {"tokenizer": "byte"}, {"tokenizer": "bpe", "vocab_size": 280}, {"tokenizer": "bpe", "vocab_size": 300},
        {"test_fraction": 0.2})}
    assert len(others | {data.cache_path}) == 5
    book.write_text(TEXT + "more", encoding="utf-8")
    assert load(book, tmp_path).cache_path != data.cache_path


@pytest.mark.parametrize("damage", ["truncate", "meta", "tokenizer"])
def test_damaged_cache_is_rebuilt(book, tmp_path, damage):
    first = load(book, tmp_path)
    train, val, folder = first.train.copy(), first.val.copy(), first.cache_path
    del first
    if damage == "truncate":
        (folder / "train.bin").write_bytes((folder / "train.bin").read_bytes()[:-3])
    elif damage == "meta":
        (folder / "meta.json").write_text('{"format": 1, "key": ')
    else:
        (folder / "tokenizer.json").unlink()
    with pytest.warns(UserWarning, match=f"rebuilding the damaged token cache {folder}"):
        again = load(book, tmp_path)
    assert np.array_equal(again.train, train) and np.array_equal(again.val, val)


def test_crash_while_building_leaves_no_cache(book, tmp_path, monkeypatch):
    calls = []

    def crash(ids, f):
        calls.append(f.name)
        raise KeyboardInterrupt

    monkeypatch.setattr(tokencache, "_write", crash)
    with pytest.raises(KeyboardInterrupt):
        load(book, tmp_path)
    assert calls and list((tmp_path / "cache" / "tokens").iterdir()) == []


def test_dataset_names(tmp_path):
    assert is_text_dataset("tinyshakespeare") and is_text_dataset("text:./a.txt")
    assert not is_text_dataset("mnist") and not is_text_dataset("imagefolder:x")
    with pytest.raises(DataError, match="did you mean 'tinyshakespeare'.*text:PATH"):
        load_text(DataConfig(name="tinyshakespear"), cache_dir=tmp_path)
    with pytest.raises(DataError, match="holds images, not text"):
        load_text(DataConfig(name="mnist"), cache_dir=tmp_path)
    with pytest.raises(DataError, match="is text, not images"):
        load_images(DataConfig(name="tinyshakespeare"), cache_dir=tmp_path)


def test_list_datasets_has_text_rows(tmp_path):
    rows = {r["name"]: r for r in list_datasets(tmp_path)}
    assert rows["tinyshakespeare"]["kind"] == "text" and rows["mnist"]["kind"] == "image"
    assert rows["tinyshakespeare"]["shape"] == () and not rows["tinyshakespeare"]["cached"]
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("x")
    assert next(r for r in list_datasets(tmp_path) if r["name"] == "tinyshakespeare")["cached"]


# ----------------------------------------------------------------- Tiny Shakespeare


def test_tinyshakespeare_from_data_dir(shakespeare_dir, tmp_path):
    raw = (shakespeare_dir / "input.txt").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == TEXT_DATASETS["tinyshakespeare"].file.sha256
    n = len(raw.decode("utf-8"))
    assert (n, int(n * 0.9), n - int(n * 0.9)) == (1_115_394, 1_003_854, 111_540)  # nanoGPT's 90/10
    data = load_text(DataConfig(name="tinyshakespeare", data_dir=str(shakespeare_dir)), cache_dir=tmp_path,
                     progress=False)
    assert data.vocab_size == 65
    assert (data.train_chars, data.val_chars) == (1_003_854, 111_540) == (len(data.train), len(data.val))
    assert data.tokenizer.decode(data.train[:14].tolist()) == "First Citizen:"
    assert not (tmp_path / "tinyshakespeare").exists()  # nothing downloaded


def test_tinyshakespeare_data_dir_without_the_file(tmp_path):
    with pytest.raises(DataError, match=f"data_dir {tmp_path} lacks input.txt"):
        load_text(DataConfig(name="tinyshakespeare", data_dir=str(tmp_path)), cache_dir=tmp_path)


@pytest.fixture
def served_shakespeare(http_root, monkeypatch):
    """A Tiny-Shakespeare-like entry whose mirror is the local server; returns (payload, base URL)."""
    root, base = http_root
    payload = ("ROMEO:\nBut soft, what light through yonder window breaks?\n" * 30).encode()
    (root / "ts").mkdir()
    (root / "ts" / "input.txt").write_bytes(payload)
    info = replace(TEXT_DATASETS["tinyshakespeare"], mirrors=(f"{base}/ts/",),
                   file=RemoteFile("input.txt", sha256=hashlib.sha256(payload).hexdigest()))
    monkeypatch.setitem(TEXT_DATASETS, "tinyshakespeare", info)
    return payload, base


def test_download_then_cache(served_shakespeare, tmp_path):
    payload, _ = served_shakespeare
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="not in the cache.*--data-dir"):
        load_text(DataConfig(name="tinyshakespeare"), cache_dir=cache, download=False)
    data = load_text(DataConfig(name="tinyshakespeare"), cache_dir=cache, progress=False)
    assert (cache / "tinyshakespeare" / "input.txt").read_bytes() == payload
    assert "".join(decoded(data)) == payload.decode()
    again = load_text(DataConfig(name="tinyshakespeare"), cache_dir=cache, download=False, progress=False)
    assert np.array_equal(again.train, data.train)


def test_download_with_wrong_checksum_leaves_nothing(served_shakespeare, tmp_path, monkeypatch):
    wrong = replace(TEXT_DATASETS["tinyshakespeare"], file=RemoteFile("input.txt", sha256="0" * 64))
    monkeypatch.setitem(TEXT_DATASETS, "tinyshakespeare", wrong)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="checksum mismatch for input.txt"):
        load_text(DataConfig(name="tinyshakespeare"), cache_dir=cache, progress=False)
    assert [str(p.relative_to(cache)) for p in cache.rglob("*")] == ["tinyshakespeare"]  # an empty folder
    assert os.listdir(cache / "tinyshakespeare") == []


# ---------------------------------------------------------------- bounded folders and globs (issue 24)

def _looped(tmp_path: Path) -> Path:
    """A folder whose symbolic links lead back up the tree (a walk that follows them never ends)."""
    root = tmp_path / "looped"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "2.txt").write_text("two")
    (root / "1.txt").write_text("one")
    for link, target in (("a/up", ".."), ("a/b/top", "../.."), ("a/b/self", "."), ("a/b/back", "..")):
        (root / link).symlink_to(target, target_is_directory=True)
    return root


@pytest.mark.parametrize("spec", ["{root}", "{root}/**/*.txt", "{root}/**", "{root}/*/*/*.txt"])
def test_symlink_loops_are_not_followed(tmp_path, spec):
    import time

    root = _looped(tmp_path)
    start = time.perf_counter()
    files = corpus.find_text_files(spec.format(root=root))
    assert time.perf_counter() - start < 5
    names = sorted(f.path.name for f in files)
    assert names == (["2.txt"] if spec.endswith("*/*/*.txt") else ["1.txt", "2.txt"])


def test_glob_keeps_globs_rules_for_hidden_files_and_depth(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / ".h").mkdir()
    for rel in ("d/a.md", "d/e/b.md", "d/.c.md", "d/.h/x.md"):
        (tmp_path / rel).write_text("x")
    names = lambda spec: [f.path.name for f in corpus.find_text_files(str(tmp_path / spec))]  # noqa: E731
    assert names("d/*.md") == ["a.md"]
    assert names("d/**/*.md") == ["a.md", "b.md"]
    assert names("d/.*.md") == [".c.md"]


def test_the_number_of_files_and_entries_is_bounded(tmp_path, monkeypatch):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(5):
        (root / f"{i}.txt").write_text(f"file {i}")
    monkeypatch.setattr(corpus, "MAX_FILES", 3)
    with pytest.raises(DataError, match=r"names 5 files, more than a corpus may hold \(3\)"):
        corpus.find_text_files(str(root))
    monkeypatch.setattr(corpus, "MAX_ENTRIES", 2)
    with pytest.raises(DataError, match=r"more than 2 entries"):
        corpus.find_text_files(f"{root}/**/*.txt")
