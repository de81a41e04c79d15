"""BLEU, self-BLEU and distinct-n on small hand-checked examples."""

from __future__ import annotations

import math

import pytest

from genforge.metrics.text import bleu, distinct_n, self_bleu


def test_distinct_n_counts_pooled_ngrams():
    samples = ["a b a b", "a c"]
    assert distinct_n(samples, 1) == {"distinct": 0.5, "unique": 3, "total": 6, "n": 1}  # a b c / a b a b a c
    assert distinct_n(samples, 2) == {"distinct": 0.75, "unique": 3, "total": 4, "n": 2}  # ab ba ab ac
    assert distinct_n([["x", "y"], ["x", "y"]], 2) == {"distinct": 0.5, "unique": 1, "total": 2, "n": 2}
    with pytest.raises(ValueError, match="no sample has 3"):
        distinct_n(["a b", "c"], 3)


def test_self_bleu_of_identical_samples_is_100():
    assert self_bleu(["the cat sat on the mat"] * 3) == pytest.approx(100.0, rel=1e-12)


def test_self_bleu_by_hand():
    # each sample against the other: unigrams 3/4, bigrams 2/3, trigrams 1/2, 4-grams 0/1 → 0.1 (method1)
    samples = ["a b c d", "a b c e"]
    assert self_bleu(samples, max_order=2) == pytest.approx(100 * math.sqrt(0.75 * 2 / 3), rel=1e-12)
    assert self_bleu(samples, max_order=4) == pytest.approx(100 * (0.75 * 2 / 3 * 0.5 * 0.1) ** 0.25, rel=1e-12)
    # brevity penalty: "a b" vs "a b c d" has BP exp(1 - 4/2); the longer one precision 2/4, BP 1
    assert self_bleu(["a b", "a b c d"], max_order=1) == pytest.approx(100 * (math.exp(-1) + 0.5) / 2, rel=1e-12)


def test_self_bleu_excludes_the_sample_itself():
    assert self_bleu(["a b c d", "e f g h"]) == 0.0


def test_self_bleu_matches_nltk_on_a_small_corpus():
    # reference: NLTK 3.10 sentence_bleu(others, sample, uniform weights, SmoothingFunction().method1), averaged
    samples = [
        "the cat sat on the mat",
        "the dog sat on the log",
        "a cat and a dog",
        "the cat sat",
        "on the mat the dog sat down",
    ]
    assert self_bleu(samples, max_order=2) == pytest.approx(63.35431442573143, rel=1e-12)
    assert self_bleu(samples, max_order=4) == pytest.approx(26.76545600388579, rel=1e-12)


def test_bleu_of_identical_text_is_100_with_a_signature():
    hyps = ["the cat sat on the mat", "a quick brown fox jumps"]
    score, signature = bleu(hyps, hyps)
    assert score == pytest.approx(100.0, rel=1e-9)
    assert "nrefs:1" in signature and "tok:13a" in signature
    score2, signature2 = bleu(hyps, [hyps, ["x y z", "u v w"]], tokenize="char")
    assert score2 == pytest.approx(100.0, rel=1e-9) and "nrefs:2" in signature2 and "tok:char" in signature2
    assert bleu(["the cat"], ["a dog"])[0] == pytest.approx(0.0)


def test_empty_and_malformed_inputs_raise():
    for call in (lambda: bleu([], []), lambda: self_bleu([]), lambda: distinct_n([], 1)):
        with pytest.raises(ValueError, match="empty"):
            call()
    with pytest.raises(TypeError, match="single string"):
        self_bleu("a b c")
    with pytest.raises(ValueError, match="at least 2"):
        self_bleu(["a b c"])
    with pytest.raises(ValueError, match="segments"):
        bleu(["a", "b"], ["a"])
