"""The leaderboard: both runs in md + html, ranking only comparable protocols, no external references."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from genforge.evaluation.compare import build_leaderboard, compare_runs, default_out
from genforge.evaluation.protocol import EvalError
from genforge.evaluation.runeval import evaluate_run
from genforge.training.run import train
from tests.evaluation.test_images import eval_cache  # noqa: F401  (session fixture: a digits evaluator)
from tests.evaluation.test_textmetrics import write_corpus


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cmp")
    runs = {r: train(r, overrides=["train.max_steps=6", "train.log_every=2"], out=root / r, progress=False).run_dir
            for r in ("tiny-gan", "tiny-vae")}
    corpus = write_corpus(root / "corpus")
    runs["tiny-gpt"] = train("tiny-gpt", overrides=["train.max_steps=4", "train.log_every=2", "train.eval_every=2"],
                             data_dir=corpus, out=root / "tiny-gpt", cache_dir=root / "cache", progress=False).run_dir
    runs["cache"] = root / "cache"
    return runs


@pytest.fixture
def runs(trained, tmp_path) -> dict[str, Path]:
    return {k: Path(shutil.copytree(v, tmp_path / "runs" / k)) for k, v in trained.items() if k != "cache"}


def external_refs(page: str) -> list[str]:
    """Anything in the page that a browser would fetch from elsewhere."""
    bad = re.findall(r"(?:https?:)?//[\w.-]+\.\w+", page)
    bad += [s for s in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page) if not s.startswith("data:")]
    bad += re.findall(r"url\(", page) + re.findall(r"@import", page) + re.findall(r"<link\b", page)
    return bad


def test_two_runs_make_md_and_self_contained_html(runs, eval_cache, tmp_path):  # noqa: F811
    for name in ("tiny-gan", "tiny-vae"):
        evaluate_run(runs[name], n=300, cache_dir=eval_cache)
    out = compare_runs([runs["tiny-gan"], runs["tiny-vae"]], out=tmp_path / "board")
    md, page = out.md_path.read_text(), out.html_path.read_text()
    for text in (md, page):
        assert "tiny-gan" in text and "tiny-vae" in text and "FID" in text and "precision" in text
    assert external_refs(page) == []
    assert page.count('src="data:image/png;base64,') == 3  # two sample grids and the losses (no eval curves)
    assert "Training losses" in page and (tmp_path / "board" / "leaderboard_files" / "losses.png").is_file()
    fid = out.leaderboard.column("fid")
    ranks = sorted(cell.rank for cell in fid.cells.values())
    assert ranks == [1, 2] and not fid.excluded
    nll = out.leaderboard.column("nll")
    assert list(nll.cells) == ["tiny-vae"] and nll.cells["tiny-vae"].rank is None  # only the VAE: nothing to rank
    recon = md.split("## Reconstruction of reference images")[1].split("##")[0]
    assert "tiny-vae" in recon and "tiny-gan" not in recon  # a GAN does not reconstruct: no row there
    assert "<h2>Protocols ranked under</h2>" in page and "evaluator:digits (128-d" in page
    assert "](../runs/tiny-gan/samples.png)" in md  # markdown links the grids relative to the board


def test_incompatible_protocols_are_flagged_not_ranked(runs, eval_cache, tmp_path):  # noqa: F811
    evaluate_run(runs["tiny-gan"], n=300, metrics=("fid", "pr"), cache_dir=eval_cache)
    evaluate_run(runs["tiny-vae"], n=200, metrics=("fid", "pr"), cache_dir=eval_cache)
    board = build_leaderboard([runs["tiny-gan"], runs["tiny-vae"]])
    fid = board.column("fid")
    assert fid.reference["n_generated"] == 300  # the tie goes to the first run listed
    assert fid.cells["tiny-vae"].flag and fid.cells["tiny-vae"].rank is None
    assert fid.cells["tiny-gan"].rank is None and not fid.cells["tiny-gan"].flag  # alone: nothing to rank against
    assert fid.excluded["tiny-vae"] == ["n_generated: 300 vs 200"]
    out = compare_runs([runs["tiny-gan"], runs["tiny-vae"]], out=tmp_path)
    assert "not comparable: n_generated: 300 vs 200" in out.md_path.read_text()
    assert "not comparable: n_generated: 300 vs 200" in out.html_path.read_text()
    # the VAE evaluated again under the GAN's protocol: its history is not needed, the current result ranks
    evaluate_run(runs["tiny-vae"], n=300, metrics=("fid",), cache_dir=eval_cache)
    fid = build_leaderboard([runs["tiny-gan"], runs["tiny-vae"]]).column("fid")
    assert {n: c.rank for n, c in fid.cells.items()} in ({"tiny-gan": 1, "tiny-vae": 2}, {"tiny-gan": 2, "tiny-vae": 1})


def test_history_results_rank_under_the_shared_protocol(runs, eval_cache):  # noqa: F811
    evaluate_run(runs["tiny-gan"], n=300, metrics=("fid",), cache_dir=eval_cache)
    evaluate_run(runs["tiny-vae"], n=300, metrics=("fid",), cache_dir=eval_cache)
    evaluate_run(runs["tiny-vae"], n=250, metrics=("fid",), cache_dir=eval_cache)  # n=300 moves to history
    fid = build_leaderboard([runs["tiny-gan"], runs["tiny-vae"]]).column("fid")
    assert fid.reference["n_generated"] == 300
    assert fid.cells["tiny-vae"].rank is not None and not fid.excluded
    assert fid.cells["tiny-vae"].earlier and not fid.cells["tiny-gan"].earlier  # marked as an earlier result


def test_unevaluated_and_text_runs(runs, eval_cache, tmp_path):  # noqa: F811
    out = compare_runs([runs["tiny-gan"], runs["tiny-gpt"]], out=tmp_path / "b")
    md, page = out.md_path.read_text(), out.html_path.read_text()
    assert f"no eval.json — run `genforge eval {runs['tiny-gan']}`" in md
    assert "no eval.json" in page and "genforge eval" in page
    excerpt = (runs["tiny-gpt"] / "samples.txt").read_text()[:40]
    assert excerpt.splitlines()[0] in md
    assert "Evaluation during training" in page  # the GPT's val/loss curve
    assert external_refs(page) == []


def test_text_leaderboard(runs, tmp_path, trained):
    evaluate_run(runs["tiny-gpt"], cache_dir=trained["cache"], n=4, max_new_tokens=24, prompts=4, prompt_tokens=8,
                 continuation_tokens=8)
    out = compare_runs([runs["tiny-gpt"]], out=tmp_path)
    board = out.leaderboard
    assert list(board.tables) == ["Likelihood of the validation text", "Diversity of generated text",
                                  "Continuations of held-out prompts"]
    assert [c.metric for c in board.columns] == ["loss", "perplexity", "bpc", "distinct_1", "distinct_2",
                                                 "self_bleu", "bleu"]
    md = out.md_path.read_text()
    assert "bits/char" in md and "## Continuations of held-out prompts" in md and "tokenizer char/" in md


def test_stale_evaluations_are_not_ranked(runs, eval_cache, tmp_path):  # noqa: F811
    for name in ("tiny-gan", "tiny-vae"):
        evaluate_run(runs[name], n=200, metrics=("fid",), cache_dir=eval_cache)
    weights = runs["tiny-vae"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")  # as if trained further after the evaluation
    out = compare_runs([runs["tiny-gan"], runs["tiny-vae"]], out=tmp_path)
    fid = out.leaderboard.column("fid")
    assert fid.cells["tiny-vae"].rank is None and fid.excluded["tiny-vae"][0].startswith("stale")
    assert "stale: model.safetensors changed" in out.html_path.read_text()


def test_errors_and_default_out(tmp_path):
    with pytest.raises(EvalError, match="at least one"):
        compare_runs([])
    with pytest.raises(EvalError, match="is not a directory"):
        compare_runs([tmp_path / "nope"])
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "b").mkdir()
    assert default_out([tmp_path / "runs" / "a", tmp_path / "runs" / "b"]) == (tmp_path / "runs").resolve()
    assert default_out([tmp_path / "runs" / "a"]) == (tmp_path / "runs").resolve()
    (tmp_path / "runs" / "a" / "eval.json").write_text("{broken")
    board = build_leaderboard([tmp_path / "runs" / "a"])
    assert "not valid JSON" in board.entries[0].error
