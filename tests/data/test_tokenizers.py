"""char / byte / bpe tokenizers: round trips, saving, determinism, streaming decode."""

from __future__ import annotations

import json
import random

import pytest

from genforge.data import DataError, Tokenizer, load_tokenizer
from genforge.data.corpus import safe_chunks
from genforge.data.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer

UNICODE = "naïve café — 日本語 🙂"
CORPUS = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
          "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 20 + UNICODE + "\n"


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train([CORPUS], 300)


def make(kind: str, bpe: BPETokenizer) -> Tokenizer:
    return {"char": CharTokenizer.from_text(CORPUS), "byte": ByteTokenizer(), "bpe": bpe}[kind]


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_round_trip_including_non_ascii(kind, bpe):
    tok = make(kind, bpe)
    assert tok.kind == kind
    for text in (UNICODE, CORPUS, "", "\n\n  a"):
        ids = tok.encode(text)
        assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text


def test_bpe_round_trips_text_it_never_saw(bpe):
    text = "Ωμέγα ∑ x² — \U0001F600\U0001F680 tab\there\r\nCRLF \x00 \ufeff"
    assert bpe.decode(bpe.encode(text)) == text
    assert bpe.decode(bpe.encode(text)) == bpe.hf.decode(bpe.encode(text))  # our byte table = the library's decoder


def test_char_vocabulary_of_a_known_string():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == [" ", "d", "e", "h", "l", "o", "r", "w"] and tok.vocab_size == 8
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert tok.decode([7, 5, 6, 4, 1]) == "world"


def test_char_unknown_character_names_it():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"'é' \(U\+00E9\)"):
        tok.encode("abé")
    with pytest.raises(ValueError, match=r"U\+1F642"):
        tok.encode("🙂")


def test_byte_ids_are_utf8_bytes():
    tok = ByteTokenizer()
    assert tok.vocab_size == 256
    assert tok.encode("é日") == list("é日".encode())
    raw = b"ok \xff\xfe latin1 \xe9"
    assert tok.decode_bytes(tok.encode(raw.decode("utf-8", "surrogateescape"))) == raw


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_decode_rejects_ids_outside_the_vocabulary(kind, bpe):
    tok = make(kind, bpe)
    with pytest.raises(ValueError, match=f"token id {tok.vocab_size} is outside"):
        tok.decode([0, tok.vocab_size])


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_save_and_load_give_the_same_tokenizer(kind, bpe, tmp_path):
    tok = make(kind, bpe)
    path = tok.save(tmp_path / "run")
    assert path == tmp_path / "run" / "tokenizer.json"
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["tokenizer.json"]  # no temporary left
    loaded = load_tokenizer(tmp_path / "run")
    assert type(loaded) is type(tok) and loaded == tok and loaded.vocab_size == tok.vocab_size
    assert loaded.encode(CORPUS) == tok.encode(CORPUS)
    assert load_tokenizer(path) == tok  # the file itself works too
    assert tok != (ByteTokenizer() if kind != "byte" else CharTokenizer("ab"))


def test_bpe_file_is_the_libraries_format(bpe, tmp_path):
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer.from_file(str(bpe.save(tmp_path)))
    assert hf.encode(CORPUS).ids == bpe.encode(CORPUS)


def test_load_tokenizer_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=f"no tokenizer at {tmp_path / 'tokenizer.json'}"):
        load_tokenizer(tmp_path)
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"kind": "char", "chars": ["a", ')
    with pytest.raises(DataError, match="not valid JSON"):
        load_tokenizer(tmp_path)
    bad.write_text(json.dumps({"kind": "morse"}))
    with pytest.raises(DataError, match="not a genforge tokenizer"):
        load_tokenizer(tmp_path)
    bad.write_text(json.dumps({"kind": "char", "chars": []}))
    with pytest.raises(DataError, match="not a valid char tokenizer"):
        load_tokenizer(bad)


def test_bpe_training_is_deterministic_and_honours_vocab_size(bpe):
    again = BPETokenizer.train([CORPUS], 300)
    assert again.to_json() == bpe.to_json()
    assert bpe.vocab_size == 300
    assert BPETokenizer.train([CORPUS], 256).vocab_size == 256  # bytes only, no merge
    assert BPETokenizer.train([CORPUS], 280).vocab_size == 280
    assert len(bpe.encode(CORPUS)) < len(CORPUS.encode()) / 2  # the merges compress
    with pytest.raises(ValueError, match="must be >= 256"):
        BPETokenizer.train([CORPUS], 200)


@pytest.mark.parametrize("text", [CORPUS, CORPUS.replace("\n", " ")], ids=["lines", "one-line"])
def test_bpe_over_safe_chunks_equals_bpe_over_the_whole(bpe, text):
    whole = bpe.encode(text)
    naive = [text[i:i + 97] for i in range(0, len(text), 97)]
    assert [i for c in naive for i in bpe.encode(c)] != whole  # cutting anywhere changes the tokens
    for size in (13, 97, 500):
        chunks = list(safe_chunks([text[:1000], text[1000:]], size=size))
        assert "".join(chunks) == text and len(chunks) > 3
        assert [i for c in chunks for i in bpe.encode(c)] == whole
    assert BPETokenizer.train(safe_chunks([text], size=97), 300) == BPETokenizer.train([text], 300)


def test_safe_chunks_cuts_text_without_whitespace_at_four_times_the_size():
    text = "x" * 1000
    chunks = list(safe_chunks([text], size=100))
    assert "".join(chunks) == text and max(map(len, chunks)) == 400


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_stream_decoder_matches_decode_one_id_at_a_time(kind, bpe):
    tok = make(kind, bpe)
    ids = tok.encode(UNICODE + CORPUS[:200])
    stream = tok.stream_decoder()
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == tok.decode(ids) == UNICODE + CORPUS[:200]
    assert "\ufffd" not in "".join(pieces)  # no character was emitted half-way


def test_stream_decoder_holds_back_a_split_character():
    tok = ByteTokenizer()
    stream = tok.stream_decoder()
    assert [stream.push(b) for b in "日".encode()] == ["", "", "日"]
    assert stream.push(list("🙂!".encode())) == "🙂!"
    assert stream.push("é".encode()[0]) == "" and stream.flush() == "\ufffd"  # an unfinished one at the end


def test_stream_decoder_on_bpe_splits_multibyte_characters(bpe):
    ascii_only = BPETokenizer.train([CORPUS.encode("ascii", "ignore").decode()], 300)
    ids = ascii_only.encode("日")  # never seen: one token per byte
    assert len(ids) == 3
    stream = ascii_only.stream_decoder()
    assert [stream.push(i) for i in ids] == ["", "", "日"]


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_stream_decoder_equals_decode_on_random_ids(kind, bpe):
    tok = make(kind, bpe)
    rng = random.Random(0)
    for _ in range(50):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 30))]
        stream = tok.stream_decoder()
        assert "".join(stream.push(i) for i in ids) + stream.flush() == tok.decode(ids)
        if kind == "bpe":  # invalid UTF-8 is replaced the same way as the library does
            assert tok.decode(ids) == bpe.hf.decode(ids)


# ---------------------------------------------------------------- checked on load (issue 24, finding 4)

def _saved(bpe, tmp_path, change) -> object:
    data = json.loads(bpe.to_json())
    change(data)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    return path


def test_a_regular_expression_in_the_pre_tokenizer_is_refused(bpe, tmp_path):
    split = {"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated", "invert": False}
    path = _saved(bpe, tmp_path, lambda d: d.__setitem__("pre_tokenizer", {"type": "Sequence",
                                                                           "pretokenizers": [split]}))
    with pytest.raises(DataError, match=r"pre_tokenizer holds a regular expression \('\(a\+\)\+\$'\)"):
        load_tokenizer(path)
    plain = {**split, "pattern": {"String": " "}}
    path = _saved(bpe, tmp_path, lambda d: d.__setitem__("pre_tokenizer", plain))
    assert load_tokenizer(path).encode("a b") == load_tokenizer(path).encode("a b")  # a plain split still loads


def test_bpe_dropout_is_refused(bpe, tmp_path):
    path = _saved(bpe, tmp_path, lambda d: d["model"].__setitem__("dropout", 0.1))
    with pytest.raises(DataError, match=r"BPE dropout \(0.1\)"):
        load_tokenizer(path)
    assert load_tokenizer(_saved(bpe, tmp_path, lambda d: None)) == bpe  # null dropout: the file genforge writes


def test_deeply_nested_or_huge_files_are_one_data_error(tmp_path, monkeypatch):
    import genforge.data.tokenizers as tokenizers

    path = tmp_path / "tokenizer.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match=r"nested too deeply"):
        load_tokenizer(path)
    monkeypatch.setattr(tokenizers, "MAX_FILE_BYTES", 10)
    with pytest.raises(DataError, match=r"more than a tokenizer may be"):
        load_tokenizer(path)


def test_a_native_panic_becomes_one_data_error(bpe, monkeypatch):
    panic = type("PanicException", (BaseException,), {"__module__": "pyo3_runtime"})

    class Panicking:
        def encode(self, *a, **k):
            raise panic("Onig: Regex search error: retry-limit-in-match over\nsecond line")

    monkeypatch.setattr(bpe, "hf", Panicking())
    with pytest.raises(DataError, match=r"failed while encoding text: Onig: .* over second line$"):
        bpe.encode("aaaa")
    other = type("Other", (BaseException,), {})
    monkeypatch.setattr(Panicking, "encode", lambda *a, **k: (_ for _ in ()).throw(other()))
    with pytest.raises(other):  # only the library's panic is translated
        bpe.encode("aaaa")
