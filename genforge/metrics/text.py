"""Text metrics: corpus BLEU (sacrebleu), self-BLEU (Zhu et al. 2018) and distinct-n (Li et al. 2016).

Tokenisation for self-BLEU and distinct-n: a string sample is split on
whitespace (``str.split()``, no lower-casing, punctuation stays attached);
pass pre-tokenised samples (lists of tokens, e.g. characters) to choose
otherwise. BLEU uses sacrebleu's own tokeniser, named in its signature.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial

from sacrebleu.metrics import BLEU

Sample = str | Sequence[str]  # a text, or its tokens
SMOOTH_EPS = 0.1  # NLTK SmoothingFunction().method1: numerator of an n-gram precision with no match


def _tokens(samples: Sequence[Sample], name: str) -> list[tuple[str, ...]]:
    """Each sample as a tuple of tokens (strings split on whitespace)."""
    if isinstance(samples, str):
        raise TypeError(f"{name} must be a list of samples, not a single string")
    if len(samples) == 0:
        raise ValueError(f"{name} is empty")
    return [tuple(s.split()) if isinstance(s, str) else tuple(s) for s in samples]


def _ngrams(tokens: tuple[str, ...], n: int) -> Counter:
    """Counts of the n-grams (token tuples) of one sample; empty when it has fewer than n tokens."""
    return Counter(tokens[i : i + n] for i in range(len(tokens) - n + 1))


def bleu(
    hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], *, tokenize: str = "13a"
) -> tuple[float, str]:
    """Corpus BLEU (0–100) with sacrebleu, and its signature string to record with the number.

    Args:
        hypotheses: one string per segment.
        references: one reference string per hypothesis, or several reference
            streams, each a list with one string per hypothesis.
        tokenize: sacrebleu tokeniser (``"13a"`` default, ``"char"``, ``"none"``, ...).

    Returns:
        (score, signature), e.g. ``(31.4, "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0")``.
    """
    _tokens(hypotheses, "hypotheses")  # raises on a bare string or an empty list
    _tokens(references, "references")
    streams = [list(references)] if isinstance(references[0], str) else [list(r) for r in references]
    for i, stream in enumerate(streams):
        if len(stream) != len(hypotheses):
            raise ValueError(f"reference stream {i} has {len(stream)} segments for {len(hypotheses)} hypotheses")
    metric = BLEU(tokenize=tokenize)
    score = metric.corpus_score(list(hypotheses), streams).score
    return float(score), str(metric.get_signature())


def _sentence_bleu(
    hyp_counts: dict[int, Counter], hyp_len: int, max_ref_count: Callable[[int, tuple], int], ref_len: int
) -> float:
    """NLTK ``sentence_bleu`` (uniform weights, smoothing method1) in [0, 1].

    Args:
        hyp_counts: n → Counter of the hypothesis' n-grams, for n = 1..max_order.
        hyp_len: hypothesis length in tokens.
        max_ref_count: (n, gram) → largest count of ``gram`` in any one reference.
        ref_len: the reference length closest to ``hyp_len`` (the shorter on ties).
    """
    log_p = 0.0
    for n, counts in hyp_counts.items():
        matched = sum(min(c, max_ref_count(n, g)) for g, c in counts.items())
        total = max(1, sum(counts.values()))
        if n == 1 and matched == 0:
            return 0.0  # NLTK returns 0 without smoothing when no unigram matches (also for empty hypotheses)
        log_p += math.log((matched or SMOOTH_EPS) / total) / len(hyp_counts)
    bp = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    return bp * math.exp(log_p)


def _max_over_others(top: dict, i: int, n: int, gram: tuple) -> int:
    """Largest count of ``gram`` (an n-gram) in any sample but sample i, from ``top``'s (best, owner, second)."""
    best, owner, second = top.get((n, gram), (0, -1, 0))
    return second if owner == i else best


def self_bleu(samples: Sequence[Sample], max_order: int = 4) -> float:
    """Self-BLEU (Zhu et al. 2018, Texygen): mean over samples of the sentence BLEU of each
    sample against all *other* samples as references; 0–100, higher = less diverse.

    Sentence BLEU is NLTK's ``sentence_bleu`` with uniform weights up to ``max_order``
    and ``SmoothingFunction().method1`` (eps 0.1), as Texygen uses; the hypothesis
    itself is excluded from its references (Texygen's parallel variant; its serial
    one leaves it in, which inflates the score). Tokens: see the module docstring.
    Every sample is scored (no subsampling of hypotheses); cost is linear in the
    total number of tokens.
    """
    toks = _tokens(samples, "samples")
    if len(toks) < 2:
        raise ValueError(f"self_bleu needs at least 2 samples, got {len(toks)}")
    if max_order < 1:
        raise ValueError(f"max_order must be >= 1, got {max_order}")
    # per n-gram: (largest count in one sample, that sample, second largest) — the max over the others
    top: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    per_sample = [{n: _ngrams(t, n) for n in range(1, max_order + 1)} for t in toks]
    for j, grams in enumerate(per_sample):
        for n, counts in grams.items():
            for g, c in counts.items():
                best = top.setdefault((n, g), [0, -1, 0])
                if c > best[0]:
                    best[:] = [c, j, best[0]]
                elif c > best[2]:
                    best[2] = c
    lengths = Counter(len(t) for t in toks)
    scores = []
    for i, (hyp, hyp_counts) in enumerate(zip(toks, per_sample)):
        lengths[len(hyp)] -= 1  # the references are the other samples
        ref_len = min((ln for ln, k in lengths.items() if k > 0), key=lambda ln: (abs(ln - len(hyp)), ln))
        lengths[len(hyp)] += 1
        others_max = partial(_max_over_others, top, i)
        scores.append(_sentence_bleu(hyp_counts, len(hyp), others_max, ref_len))
    return 100.0 * math.fsum(scores) / len(scores)


def distinct_n(samples: Sequence[Sample], n: int) -> dict[str, float | int]:
    """distinct-n (Li et al. 2016): distinct n-grams / all n-grams, pooled over samples.

    n-grams do not cross sample boundaries. Li et al. divide by the number of
    generated tokens; we divide by the number of n-grams (the common
    implementation), and return both counts so a report can state them.

    Returns:
        ``{"distinct": unique / total, "unique": int, "total": int, "n": n}``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    counts: Counter = Counter()
    for t in _tokens(samples, "samples"):
        counts.update(_ngrams(t, n))
    total = sum(counts.values())
    if total == 0:
        raise ValueError(f"no sample has {n} or more tokens, so there are no {n}-grams")
    return {"distinct": len(counts) / total, "unique": len(counts), "total": total, "n": n}
