"""Utf8Guard: the automaton agrees with Python's UTF-8 decoder, and byte-level sampling never emits U+FFFD."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from genforge.data.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer
from genforge.data.utf8 import REJECT, Utf8Guard, byte_transitions, token_transitions
from genforge.models.gpt import GPT, GPTConfig
from genforge.sampling.engine import TextEngine, TextPiece
from genforge.sampling.text import TextPipeline, TextRequest

MULTIBYTE = "naïve café — “quoted” 東京 日本語 emoji 😀🎉 Ωmega " * 30


def dfa_valid(data: bytes) -> bool:
    t, state = byte_transitions(), 0
    for b in data:
        state = int(t[state, b])
        if state == REJECT:
            return False
    return state == 0


def python_valid(data: bytes) -> bool:
    try:
        data.decode("utf-8", errors="strict")
        return True
    except UnicodeDecodeError:
        return False


def test_the_automaton_accepts_exactly_what_python_decodes():
    for n in (1, 2):  # every sequence of one and two bytes
        for seq in itertools.product(range(256), repeat=n):
            assert dfa_valid(bytes(seq)) == python_valid(bytes(seq)), bytes(seq)
    rng = random.Random(0)
    lead = [0x41, 0xC3, 0xE0, 0xE2, 0xED, 0xF0, 0xF4, 0xF5, 0x80, 0xA0, 0xBF, 0x90, 0x8F]
    for _ in range(20000):  # longer sequences, biased towards the interesting bytes
        seq = bytes(rng.choice(lead) if rng.random() < 0.7 else rng.randrange(256) for _ in range(rng.randint(3, 6)))
        assert dfa_valid(seq) == python_valid(seq), seq
    for bad in (b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80"):
        assert not dfa_valid(bad)  # overlong, surrogate, above U+10FFFF, overlong '/', 5-byte form


def test_token_transitions_equal_reading_each_token_byte_by_byte():
    tokens = [b"", b"a", b"\xc3", b"\xa9", b"\xc3\xa9", b"\xe2\x80", b"\x9c!", b"\xf0\x9f\x98\x80", b"\xff"]
    table, t = token_transitions(tokens), byte_transitions()
    for start in range(8):
        for i, tok in enumerate(tokens):
            state = start
            for b in tok:
                state = int(t[state, b]) if state != REJECT else REJECT
            assert table[start, i] == state, (start, tok)


def test_the_guard_follows_the_prompt_and_refuses_a_forbidden_token():
    tok = ByteTokenizer()
    guard = Utf8Guard(tok.token_bytes(), 2, prompt=list("é".encode())[:1])  # the prompt ends inside é
    allowed = guard.allowed()
    assert allowed.shape == (2, 256)
    assert allowed[0, 0xA9] and not allowed[0, ord("a")]  # only continuation bytes may follow 0xC3
    with pytest.raises(ValueError, match="breaks UTF-8"):
        guard.advance([ord("a"), 0xA9])
    guard.advance([0xA9, 0xA9])
    assert guard.complete().all() and not guard.allowed()[0, 0x80]


def test_char_tokenizers_need_no_guard():
    assert CharTokenizer.from_text("abc").utf8_guard(3) is None


def _random_pipe(tok, seed: int = 0) -> TextPipeline:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32)).eval()
    return TextPipeline(model, tok)


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_sampling_a_random_byte_level_model_never_emits_a_replacement_character(kind):
    tok = ByteTokenizer() if kind == "byte" else BPETokenizer.train([MULTIBYTE], vocab_size=300)
    pipe = _random_pipe(tok)
    request = TextRequest(prompt="café", n=6, seed=1)
    options = {"max_new_tokens": 120, "temperature": 1.5}
    pieces = [""] * 6
    texts = pipe.generate(request, options, on_text=lambda i, p: pieces.__setitem__(i, pieces[i] + p))
    assert all("\ufffd" not in t for t in texts)
    assert [request.prompt + p for p in pieces] == texts
    assert all(t.encode("utf-8").decode("utf-8") == t for t in texts)
    # the same model's raw tokens, undecoded by the guard, do break UTF-8: the guard is what prevents it
    ids = torch.tensor([tok.encode("café")] * 6)
    raw = pipe.model.generate(ids, 120, temperature=1.5, generator=torch.Generator().manual_seed(1))
    assert any("\ufffd" in tok.decode(row.tolist()) for row in raw)


def test_the_serving_engine_guards_its_rows_too():
    tok = ByteTokenizer()
    pipe = _random_pipe(tok, seed=2)
    request = TextRequest(prompt="東京", n=3, seed=4)
    options = {"max_new_tokens": 80, "temperature": 1.3}
    out = [""] * 3
    engine = TextEngine(pipe, max_rows=4)
    try:
        job = engine.submit(request, options, sink=lambda e: isinstance(e, TextPiece)
                            and out.__setitem__(e.index, out[e.index] + e.text))
        assert job.wait(60)
    finally:
        engine.close()
    assert all("\ufffd" not in t for t in out)
    assert [request.prompt + t for t in out] == pipe.generate(request, options)
