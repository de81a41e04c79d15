"""Text-run evaluation: full-split likelihood, diversity of samples, BLEU of held-out continuations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from genforge.config import DataConfig
from genforge.data import load_text
from genforge.evaluation.protocol import EvalError
from genforge.tasks.evaluate import evaluate_run
from genforge.evaluation.text import heldout_nll
from genforge.evaluation.textmetrics import TextEvalOptions, evaluate_text, tokenizer_id
from genforge.sampling.text import TextPipeline, load_text_model
from genforge.training.run import train

SMALL = dict(n=6, max_new_tokens=40, prompts=8, prompt_tokens=16, continuation_tokens=16)


def write_corpus(folder: Path, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    words = ["love", "night", "speak", "thee", "pray", "sweet", "death", "light", "heart", "moon"]
    lines = []
    for i in range(400):
        who = ("ROMEO", "JULIET", "NURSE")[i % 3]
        lines.append(f"{who}:\nI pray thee, " + " ".join(rng.choice(words, 5)) + ".\n\n")
    (folder / "input.txt").write_text("".join(lines), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("text")
    corpus = write_corpus(root / "corpus")
    cache = root / "cache"
    run = train("tiny-gpt", overrides=["train.max_steps=3", "data.verify=false"], data_dir=corpus, out=root / "run", cache_dir=cache,
                progress=False).run_dir
    return run, corpus, cache


def test_text_run_eval_json(text_run):
    run, corpus, cache = text_run
    rec = evaluate_run(run, cache_dir=cache, **SMALL).record
    byname = {r["metric"]: r for r in rec["results"]}
    assert list(byname) == ["loss", "perplexity", "bpc", "distinct_1", "distinct_2", "self_bleu", "bleu"]
    assert byname["perplexity"]["value"] == pytest.approx(math.exp(byname["loss"]["value"]))
    model, tok = load_text_model(run)
    data = load_text(DataConfig(name="tinyshakespeare", data_dir=str(corpus), verify=False), cache_dir=cache, progress=False)
    direct = heldout_nll(model, data.val, block_size=model.config.block_size, batch_size=64)
    assert byname["loss"]["value"] == pytest.approx(direct["val/loss"], rel=1e-6)  # the whole split
    p = byname["loss"]["protocol"]
    assert p["n_reference"] == data.val.size - 1 and p["reference_subsample"] == "all"
    assert p["tokenizer"] == tokenizer_id(tok) and p["tokenizer"].startswith("char/")
    assert p["split_sizes"] == {"train_tokens": int(data.train.size), "val_tokens": int(data.val.size),
                                "train_chars": data.train_chars, "val_chars": data.val_chars}
    d1 = byname["distinct_1"]
    assert 0 < d1["value"] <= 1 and d1["details"]["unique"] / d1["details"]["total"] == d1["value"]
    assert "word 1-grams in 6 samples" in d1["details"]["denominator"]
    assert d1["protocol"]["n_generated"] == 6 and d1["protocol"]["params"]["temperature"] == 1.0
    b = byname["bleu"]
    assert b["protocol"]["params"]["sacrebleu"].startswith("nrefs:1|") and b["protocol"]["n_generated"] == 8
    assert b["protocol"]["params"]["decoding"] == "greedy" and 0 <= b["value"] <= 100
    assert set(b["details"]["example"]) == {"prompt", "reference", "hypothesis"}
    assert rec["subject"]["family"] == "gpt"


def test_text_eval_is_seeded_and_options_are_checked(text_run):
    run, corpus, cache = text_run
    cfg = DataConfig(name="tinyshakespeare", data_dir=str(corpus), verify=False)
    data = load_text(cfg, cache_dir=cache, progress=False)
    model, tok = load_text_model(run)
    opts = TextEvalOptions(metrics=("distinct", "bleu"), **SMALL)
    a = {r.metric: r.value for r in evaluate_text(TextPipeline(model, tok), data, cfg, opts).results}
    b = {r.metric: r.value for r in evaluate_text(TextPipeline(model, tok), data, cfg, opts).results}
    assert a == b
    opts.seed = 1
    c = evaluate_text(TextPipeline(model, tok), data, cfg, opts).results
    assert {r.metric: r.value for r in c}["bleu"] == a["bleu"]  # greedy continuations ignore the seed
    with pytest.raises(EvalError, match="unknown text metric"):
        TextEvalOptions(metrics=("fid",))
    with pytest.raises(EvalError, match="temperature"):
        TextEvalOptions(temperature=-1)


def test_bleu_prompts_are_non_overlapping_windows(text_run):
    run, corpus, cache = text_run
    cfg = DataConfig(name="tinyshakespeare", data_dir=str(corpus), verify=False)
    data = load_text(cfg, cache_dir=cache, progress=False)
    model, tok = load_text_model(run)
    windows = data.val.size // 32
    r = evaluate_text(TextPipeline(model, tok), data, cfg, TextEvalOptions(metrics=("bleu",), prompts=10_000, prompt_tokens=16,
                                                             continuation_tokens=16))
    assert r.results[0].protocol.n_generated == windows
    assert any(f"only {windows} non-overlapping windows" in w for w in r.warnings)
    with pytest.raises(EvalError, match="at least"):
        evaluate_text(TextPipeline(model, tok), data, cfg, TextEvalOptions(metrics=("bleu",), prompt_tokens=90_000))


def test_changed_corpus_is_refused(text_run, tmp_path):
    run, _, cache = text_run
    other = write_corpus(tmp_path / "other", seed=1)
    (other / "input.txt").write_text((other / "input.txt").read_text() + "Zebra qux!\n", encoding="utf-8")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(EvalError, match="tokenizer .* differs"):
        evaluate_run(run, data_dir=other, cache_dir=cache, **SMALL)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_bits_per_character_ranks_across_tokenizers_and_per_token_loss_does_not(text_run, tmp_path):
    from genforge.evaluation.leaderboard.board import build_leaderboard

    _, corpus, cache = text_run
    runs = {}
    for kind in ("char", "bpe"):
        runs[kind] = train("tiny-gpt", overrides=["train.max_steps=3", "data.verify=false", f"data.tokenizer={kind}",
                                                  "data.vocab_size=300"],
                           data_dir=corpus, out=tmp_path / kind, cache_dir=cache, progress=False).run_dir
        evaluate_run(runs[kind], cache_dir=cache, metrics=("ppl",), **SMALL)
    board = build_leaderboard([runs["char"], runs["bpe"]])
    bpc, loss = board.column("bpc"), board.column("loss")
    assert not bpc.excluded and {c.rank for c in bpc.cells.values()} <= {1, 2}
    assert all(c.rank is not None for c in bpc.cells.values())
    assert bpc.reference["tokenizer"] == "" and bpc.reference["params"]["tokenizer_independent"] is True
    assert set(loss.excluded) and any("tokenizer" in r for r in next(iter(loss.excluded.values())))
