"""The leaderboard: both runs in md + html, ranking only comparable protocols, no external references."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import pytest

from genforge.data.download import file_digest
from genforge.evaluation.compare import build_leaderboard, compare_runs, default_out
from genforge.evaluation.protocol import EvalError, Protocol, protocol_id
from genforge.evaluation.record import EVAL_FORMAT
from genforge.tasks.evaluate import evaluate_run
from genforge.rundir import RunDir
from genforge.training.run import train
from tests.evaluation.test_images import eval_cache  # noqa: F401  (session fixture: a digits evaluator)
from tests.evaluation.test_textmetrics import write_corpus


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cmp")
    runs = {r: train(r, overrides=["train.max_steps=6", "train.log_every=2"], out=root / r, progress=False).run_dir
            for r in ("tiny-gan", "tiny-vae")}
    corpus = write_corpus(root / "corpus")
    runs["tiny-gpt"] = train("tiny-gpt", overrides=["train.max_steps=4", "train.log_every=2", "train.eval_every=2",
                                                        "data.verify=false"],
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
        evaluate_run(runs[name], n=300, cache_dir=eval_cache, allow_small=True)
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
    evaluate_run(runs["tiny-gan"], n=300, metrics=("fid", "pr"), cache_dir=eval_cache, allow_small=True)
    evaluate_run(runs["tiny-vae"], n=200, metrics=("fid", "pr"), cache_dir=eval_cache, allow_small=True)
    board = build_leaderboard([runs["tiny-gan"], runs["tiny-vae"]])
    fid = board.column("fid")
    assert fid.reference["n_generated"] == 300  # the tie goes to the first run listed
    assert fid.cells["tiny-vae"].flag and fid.cells["tiny-vae"].rank is None
    assert fid.cells["tiny-gan"].rank is None and not fid.cells["tiny-gan"].flag  # alone: nothing to rank against
    assert fid.excluded["tiny-vae"] == ["n_generated: 300 vs 200"]
    out = compare_runs([runs["tiny-gan"], runs["tiny-vae"]], out=tmp_path)
    assert "not comparable: n_generated: 300 vs 200" in md_text(out.md_path.read_text())
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


def fake_run(path: Path, *, results: list[tuple[str, float, int]], task: str | None = "image", family: str = "gan",
             stale: bool = False) -> Path:
    """A run directory with a hand-written eval.json: ``results`` are (metric, value, n_generated)."""
    run = RunDir(path)
    path.mkdir(parents=True)
    if task is not None:
        run.config.write_text(f"task: {task}\nmodel:\n  family: {family}\n")
        run.weights.write_bytes(b"weights")
    rows = []
    for metric, value, n in results:
        protocol = Protocol(metric=metric, extractor="evaluator:digits", feature_dim=128, n_generated=n,
                            n_reference=300, reference_split="test", dataset="digits").to_dict()
        rows.append({"metric": metric, "value": value, "std": None, "protocol_id": protocol_id(protocol),
                     "protocol": protocol, "created": "2024-01-01T00:00:00+00:00"})
    digest = file_digest(run.weights) if run.weights.is_file() else ""
    record = {"format": EVAL_FORMAT, "created": "2024-01-01T00:00:00+00:00", "results": rows, "history": [],
              "subject": {"weights_sha256": ("0" * 64 if stale else digest), "family": family, "step": 3},
              "warnings": ["few samples"]}
    run.eval_json.write_text(json.dumps(record))
    return path


def md_table(md: str, title: str) -> tuple[list[list[str]], list[str]]:
    """Rows (run, family, then per metric: value, rank, best, footnote) and footnotes of a Markdown table."""
    section = md.split(f"## {title}\n")[1].split("\n## ")[0]
    rows = []
    for line in section.splitlines()[3:]:
        if not line.startswith("| "):
            break
        name, family, *cells = [md_text(c) for c in re.split(r" (?<!\\)\| ", line[2:-2])]
        parsed = [name, family]
        for cell in cells:
            m = re.fullmatch(r"(\*\*)?(.+?)(?:\*\*)?(?: \(#(\d+)\))?(?: †(\d+))?( ʰ)?", cell)
            parsed.append((m[2], m[3], bool(m[1]), m[4], bool(m[5])))
        rows.append(parsed)
    notes = [md_text(m[1]) for m in re.finditer(r"^†\d+: (.*)$", section, re.M)]
    return rows, notes


def md_text(cell: str) -> str:
    """What a Markdown renderer shows for ``cell``: backslash escapes and HTML entities resolved."""
    return html.unescape(re.sub(r"\\(.)", r"\1", cell))


def html_table(page: str, title: str) -> tuple[list[list[str]], list[str]]:
    """The same as :func:`md_table`, read from the HTML page."""
    section = page.split(f"<h2>{title}</h2>")[1].split("<h2>")[0]
    rows = []
    for tr in re.findall(r"<tr><td.*?</tr>", section):
        tds = re.findall(r'<td class="([^"]*)"(?: title="[^"]*")?>(.*?)</td>', tr)
        parsed = [html.unescape(tds[0][1]), html.unescape(tds[1][1])]
        for cls, content in tds[2:]:
            value = html.unescape(re.sub(r"<span.*", "", content))
            note = re.search(r" †(\d+)$", value)
            rank = re.search(r'<span class="rank">#(\d+)</span>', content)
            parsed.append((value[:note.start()] if note else value, rank[1] if rank else None, cls == "best",
                           note[1] if note else None, "ʰ</span>" in content))
        rows.append(parsed)
    notes = [html.unescape(n) for n in re.findall(r'<div class="fn">†\d+ (.*?)</div>', section)]
    return rows, notes


def test_markdown_and_html_tables_agree(tmp_path):
    runs = [fake_run(tmp_path / "a", results=[("fid", 10.0, 300), ("precision", 0.5, 300)]),
            fake_run(tmp_path / "b", results=[("fid", 8.0, 300), ("precision", 0.7, 200)], family="v|ae"),
            fake_run(tmp_path / "c", results=[("fid", 9.0, 300)], stale=True),
            fake_run(tmp_path / "d", results=[("fid", 12.0, 300), ("precision", 0.6, 300)])]
    out = compare_runs(runs, out=tmp_path / "board")
    md, page = out.md_path.read_text(), out.html_path.read_text()
    title = "Samples vs reference images"
    md_rows, md_notes = md_table(md, title)
    assert (md_rows, md_notes) == html_table(page, title)
    assert [r[0] for r in md_rows] == ["b", "a", "d", "c"]  # ranked by FID, the stale run last
    assert md_rows[0][1:] == ["v|ae", ("8.000", "1", True, None, False), ("0.700", None, False, "1", False)]
    assert md_rows[3][2] == ("9.000", None, False, "2", False)
    assert md_notes == ["b / precision: not comparable: n_generated: 300 vs 200",
                        "c / FID: stale: model.safetensors changed since this evaluation; run `genforge eval` again"]
    for text in (md, page):
        assert "stale: model.safetensors changed" in text.split(title)[0]  # in the runs table too


def test_kind_comes_from_the_recorded_task(tmp_path):
    text_run = fake_run(tmp_path / "gpt", results=[("fid", 1.0, 300)], task="text", family="gpt")
    assert not RunDir(text_run).tokenizer.exists()
    image_run = fake_run(tmp_path / "img", results=[], task="image")
    (image_run / "samples.txt").write_text("not how the task is known")
    samples_only = fake_run(tmp_path / "samples", results=[("distinct_1", 0.5, 4)], task=None)
    board = build_leaderboard([text_run, image_run, samples_only])
    assert [e.kind for e in board.entries] == ["text", "image", "text"]
    assert board.entries[1].samples_kind == "text"


def test_a_study_folder_stands_for_its_trials(tmp_path):
    study = tmp_path / "study"
    for i, loss in enumerate([3.0, 2.5]):
        run = fake_run(study / "trials" / f"trial-{i:04d}", results=[], task="text", family="gpt")
        (run / "eval.json").unlink()
        log = [{"step": 4, "loss": 4.0}, {"step": 4, "val/loss": loss + 1, "val/ppl": 30.0, "eval_s": 0.1},
               {"step": 8, "val/loss": loss, "val/ppl": float("nan"), "eval_s": 0.1}]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    (study / "trials" / "not-a-run").mkdir()  # a trial that failed before writing its config is skipped
    (study / "results.md").write_text("# Study\n")
    assert default_out([study]) == study.resolve()
    out = compare_runs([study])
    assert out.md_path == study.resolve() / "leaderboard.md"
    assert [e.name for e in out.leaderboard.entries] == ["trial-0000", "trial-0001"]
    assert "| trial-0001 | gpt | text | 8 |" in out.md_path.read_text()
    assert "val/loss 2.5 @ 8 |" in out.md_path.read_text()  # the NaN perplexity is left out
    assert "val/loss 2.5 @ 8" in out.html_path.read_text()
    # two studies: the trials keep apart by their study's name
    shutil.copytree(study, tmp_path / "other")
    names = [e.name for e in build_leaderboard([study, tmp_path / "other"]).entries]
    assert names == ["study/trials/trial-0000", "study/trials/trial-0001", "other/trials/trial-0000",
                     "other/trials/trial-0001"]
    (tmp_path / "empty" / "trials").mkdir(parents=True)
    with pytest.raises(EvalError, match="study folder without trial run directories"):
        compare_runs([tmp_path / "empty"])


def test_markdown_escapes_what_runs_configs_and_eval_files_carry(tmp_path):
    hostile = "<img src=x onerror=alert(1)>_*x*_[l](https:e.x)|`"
    run = fake_run(tmp_path / hostile, results=[("fid", 1.0, 300)], family="<script>alert(2)</script>")
    record = json.loads(RunDir(run).eval_json.read_text())
    record["warnings"] = ["<b>bold</b> `tick` **strong**"]
    RunDir(run).eval_json.write_text(json.dumps(record))
    other = fake_run(tmp_path / "plain", results=[("fid", 2.0, 300)])
    md = compare_runs([run, other], out=tmp_path / "board").md_path.read_text()
    assert f"`` {str(tmp_path / hostile).replace('|', chr(92) + '|')} ``" in md  # a path is a code span, which renderers show literally
    md = re.sub(r"(`+) .*? \1", "", md)
    for raw in ("<img", "<script", "<b>", "**strong**", "*x*", "[l](", "`tick`"):
        assert raw not in md, raw
    assert "&lt;img src=x onerror=alert(1)&gt;" in md and "&lt;script&gt;" in md
    rows, _ = md_table(md, "Samples vs reference images")
    assert rows[0][:2] == [hostile, "<script>alert(2)</script>"]  # rendered, it reads as it was written
