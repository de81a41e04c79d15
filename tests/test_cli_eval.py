"""``genforge eval``, ``compare`` and ``evaluators`` from the command line, and the training proxy FID."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genforge.cli import COMMANDS, main
from genforge.training.logger import read_metrics
from tests.evaluation.test_images import eval_cache  # noqa: F401  (session fixture: a digits evaluator)
from tests.test_cli import fail, tree_digest

FAST = ["--no-progress", "--set", "train.max_steps=6", "--set", "train.checkpoint_every=3"]


@pytest.fixture(autouse=True)
def cache_env(eval_cache, monkeypatch):  # noqa: F811
    monkeypatch.setenv("GENFORGE_CACHE", str(eval_cache))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli-eval") / "run"
    assert main(["train", "tiny-gan", "--out", str(out), *FAST]) == 0
    return out


def test_help_lists_every_subcommand(capsys):
    assert {"eval", "compare", "evaluators"} <= set(COMMANDS)
    with pytest.raises(SystemExit):
        main(["-h"])
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out
    assert "genforge eval" in out and "genforge compare" in out
    with pytest.raises(SystemExit):
        main(["eval", "-h"])
    out = capsys.readouterr().out
    for flag in ("--metrics", "--n", "--reference", "--features", "--seed", "--batch-size", "--device", "--samples",
                 "--dataset", "--allow-small"):
        assert flag in out


def test_eval_then_compare(run, tmp_path, capsys):
    assert main(["eval", str(run), "--n", "300", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "FID" in out and "KID" in out and "! FID/KID are biased by sample size" in out
    assert f"wrote {run / 'eval.json'}" in out
    rec = json.loads((run / "eval.json").read_text())
    assert rec["options"]["n"] == 300 and rec["results"][0]["protocol"]["n_generated"] == 300
    assert main(["compare", str(run), "--out", str(tmp_path / "lb")]) == 0
    out = capsys.readouterr().out
    assert "run" in out and "FID" in out and (tmp_path / "lb" / "leaderboard.html").is_file()


def test_eval_samples(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "gen.npy", rng.integers(0, 256, (200, 8, 8, 1), dtype=np.uint8))
    assert main(["eval", "--samples", str(tmp_path / "gen.npy"), "--dataset", "digits", "--metrics", "fid,kid",
                 "--no-progress"]) == 0
    assert (tmp_path / "gen-eval" / "eval.json").is_file()
    assert "FID" in capsys.readouterr().out
    fail(capsys, ["eval", "--samples", str(tmp_path / "gen.npy"), "--dataset", "mnistt"],
         "unknown dataset 'mnistt'; did you mean 'mnist'?")


@pytest.mark.parametrize("argv,pattern", [
    (["eval"], "give a RUN_DIR, or --samples FILE --dataset NAME"),
    (["eval", "no/such/run"], "not a genforge run directory"),
    (["eval", "--samples", "x.npy"], "--samples needs --dataset"),
    (["eval", "--samples", "missing.npy", "--dataset", "digits"], "samples missing.npy not found"),
    (["compare", "no/such/run"], "is not a directory"),
    (["evaluators", "build"], "usage: genforge evaluators build NAME"),
    (["evaluators", "build", "tinyshakespeare"], "cannot build an evaluator for 'tinyshakespeare'"),
])
def test_user_errors_are_one_line(argv, pattern, capsys):
    err = fail(capsys, argv, pattern)
    assert len(err.strip().splitlines()) == 1


def test_eval_errors_on_a_run_change_nothing(run, capsys, tmp_path):
    before = tree_digest(run)
    err = fail(capsys, ["eval", str(run), "--n", "50", "--no-progress"], "--allow-small")
    assert "FID needs N >= the feature dimension" in err
    fail(capsys, ["eval", str(run), "--metrics", "fid,recon"], "'recon' does not apply")
    fail(capsys, ["eval", str(run), "--metrics", "fid,bleu"], "unknown image metric(s) ['bleu']")
    fail(capsys, ["eval", str(run), "--dataset", "digits"], "--dataset applies to --samples only")
    np.save(tmp_path / "f.npy", np.full((20, 8, 8), 3.0))
    fail(capsys, ["eval", "--samples", str(tmp_path / "f.npy"), "--dataset", "digits"], "must lie in [0, 1]")
    assert tree_digest(run) == before


def test_evaluators_list(capsys):
    assert main(["evaluators"]) == 0
    out = capsys.readouterr().out
    assert "evaluator:digits" in out and "test acc" in out


def test_training_logs_the_proxy_fid(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "tiny-gan", "--out", str(out), *FAST, "--set", "train.eval_every=3",
                 "--set", "train.eval_samples=200"]) == 0
    evals = [r for r in read_metrics(out) if "eval/fid@200" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert all(r["eval/fid@200"] > 0 for r in evals)
    assert evals[0]["eval/fid_extractor"].startswith("evaluator:digits@")


def test_proxy_is_skipped_with_one_warning_without_an_evaluator(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "run"
    assert main(["train", "tiny-gan", "--set", f"data.name=imagefolder:{folder}", "--set", "model.conditional=false",
                 "--set", "train.batch_size=8", "--set", "train.eval_every=3", "--out", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert err.count("proxy FID disabled") == 1 and "--features inception" in err
    assert not any(k.startswith("eval/") for r in read_metrics(out) for k in r)
