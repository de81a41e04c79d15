"""Evaluating run directories and sample files: eval.json / eval.md contents, history, never damaging a run."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genforge.evaluation.protocol import EvalError
from genforge.evaluation.runeval import evaluate_samples, format_table, read_eval
from genforge.tasks.evaluate import evaluate_run
from genforge.metrics import SampleSizeError
from genforge.training.run import train
from tests.evaluation.test_images import eval_cache  # noqa: F401  (session fixture: a digits evaluator)

PROTOCOL_KEYS = {"metric", "extractor", "extractor_sha256", "feature_dim", "n_generated", "n_reference",
                 "reference_split", "reference_subsample", "subsample_seed", "reference_sha256", "seed", "dataset",
                 "image_size", "channels", "tokenizer", "split_sizes", "params", "genforge_version", "format"}


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for recipe in ("tiny-gan", "tiny-vae"):
        out[recipe] = train(recipe, overrides=["train.max_steps=5"], out=root / recipe, progress=False).run_dir
    return out


@pytest.fixture
def gan(runs, tmp_path) -> Path:
    """A private copy of the tiny GAN run (tests write eval files into it)."""
    return Path(shutil.copytree(runs["tiny-gan"], tmp_path / "gan"))


def test_image_run_writes_eval_json_and_md(gan, eval_cache):  # noqa: F811
    out = evaluate_run(gan, n=300, cache_dir=eval_cache, allow_small=True)  # digits: 180 test images
    rec = json.loads((gan / "eval.json").read_text())
    assert rec == out.record
    assert set(rec) == {"format", "created", "genforge_version", "subject", "options", "results", "history",
                        "warnings", "notes", "generation", "timings"}
    assert rec["format"] == "genforge-eval/1"
    sub = rec["subject"]
    assert sub["kind"] == "run" and sub["family"] == "gan" and sub["step"] == 5
    assert sub["weights_sha256"] == hashlib.sha256((gan / "model.safetensors").read_bytes()).hexdigest()
    names = [r["metric"] for r in rec["results"]]
    assert names == ["fid", "kid", "precision", "recall", "density", "coverage", "is", "modes_hit", "modes_kl"]
    for r in rec["results"]:
        assert set(r) == {"metric", "value", "std", "details", "protocol_id", "protocol", "created"}
        assert set(r["protocol"]) == PROTOCOL_KEYS
        p = r["protocol"]
        assert p["dataset"] == "digits" and p["n_generated"] == 300 and p["n_reference"] == 180
        assert p["reference_split"] == "test" and p["reference_subsample"] == "shuffled"
        assert p["extractor"] == "evaluator:digits" and len(p["extractor_sha256"]) == 64
        assert isinstance(r["value"], float)
    assert rec["generation"]["conditioning"].startswith("class labels in the reference")  # tiny-gan is conditional
    assert any("compare only results with the same N" in w for w in rec["warnings"])
    assert any("recon: skipped" in n for n in rec["notes"])
    assert {"generate", "reference_features", "generated_features", "fid", "kid", "prdc", "total"} <= set(
        rec["timings"])
    md = (gan / "eval.md").read_text()
    assert "| FID |" in md and "## Warnings" in md and "evaluator:digits" in md
    table = format_table(rec)
    assert "FID" in table.splitlines()[2] and "! " in table


def test_vae_run_adds_reconstruction_and_likelihood(runs, tmp_path, eval_cache):  # noqa: F811
    vae = Path(shutil.copytree(runs["tiny-vae"], tmp_path / "vae"))
    rec = evaluate_run(vae, n=200, metrics=("fid", "recon", "nll"), nll_samples=40, iw_samples=4,
                       cache_dir=eval_cache).record
    byname = {r["metric"]: r for r in rec["results"]}
    assert list(byname) == ["fid", "mse", "psnr", "ssim", "nll", "bits_per_dim"]
    assert 0 < byname["mse"]["value"] < 1 and byname["ssim"]["value"] <= 1
    assert byname["psnr"]["value"] == pytest.approx(10 * np.log10(1 / byname["mse"]["value"]), rel=0.5)
    nll = byname["nll"]
    assert nll["protocol"]["n_reference"] == 40 and nll["protocol"]["params"]["importance_samples"] == 4
    assert "bound" in nll["protocol"]["params"]["estimate"]
    assert byname["bits_per_dim"]["value"] == pytest.approx(nll["value"] / (64 * np.log(2)))
    assert any("not comparable with published" in n for n in rec["notes"])


def test_history_keeps_other_protocols_and_replaces_same(gan, eval_cache):  # noqa: F811
    first = evaluate_run(gan, n=300, metrics=("fid",), cache_dir=eval_cache).record
    second = evaluate_run(gan, n=200, metrics=("fid",), cache_dir=eval_cache).record
    assert [h["protocol"]["n_generated"] for h in second["history"]] == [300]
    assert second["history"][0]["value"] == first["results"][0]["value"]
    third = evaluate_run(gan, n=300, metrics=("fid", "kid"), cache_dir=eval_cache).record
    assert third["results"][0]["value"] == first["results"][0]["value"]  # seeded: same number again
    assert [(h["metric"], h["protocol"]["n_generated"]) for h in third["history"]] == [("fid", 200)]
    assert "Earlier results under other protocols" in (gan / "eval.md").read_text()


def test_seed_changes_the_samples_and_the_protocol(gan, eval_cache):  # noqa: F811
    a = evaluate_run(gan, n=200, metrics=("fid",), seed=0, cache_dir=eval_cache).record["results"][0]
    b = evaluate_run(gan, n=200, metrics=("fid",), seed=1, cache_dir=eval_cache).record["results"][0]
    assert a["value"] != b["value"] and a["protocol_id"] != b["protocol_id"]
    t = evaluate_run(gan, n=200, metrics=("fid",), reference="train", cache_dir=eval_cache).record["results"][0]
    assert t["protocol"]["reference_split"] == "train" and t["protocol"]["n_reference"] == 200


def test_failed_evaluations_change_nothing(gan, eval_cache):  # noqa: F811
    evaluate_run(gan, n=200, metrics=("fid",), cache_dir=eval_cache)
    before = tree_digest(gan)
    with pytest.raises(SampleSizeError, match="--allow-small"):
        evaluate_run(gan, n=50, cache_dir=eval_cache)
    with pytest.raises(EvalError, match="'nll' does not apply"):
        evaluate_run(gan, metrics=("nll",), cache_dir=eval_cache)
    with pytest.raises(EvalError, match="unknown image metric"):
        evaluate_run(gan, metrics=("ppl",), cache_dir=eval_cache)
    assert tree_digest(gan) == before
    (gan / "eval.json").write_text("{not json")
    before = tree_digest(gan)
    with pytest.raises(EvalError, match="not valid JSON"):
        evaluate_run(gan, n=200, cache_dir=eval_cache)
    assert tree_digest(gan) == before


def test_not_a_run_directory(tmp_path):
    with pytest.raises(EvalError, match="not a genforge run directory.*--samples"):
        evaluate_run(tmp_path)


def test_samples_npz_npy_and_folder(tmp_path, eval_cache):  # noqa: F811
    from genforge.config import DataConfig
    from genforge.data import load_images

    real = load_images(DataConfig(name="digits")).train_x[:400]  # uint8 [400, 1, 8, 8]
    np.savez(tmp_path / "gen.npz", samples=real.numpy())
    out = evaluate_samples(tmp_path / "gen.npz", dataset="digits", metrics=("fid", "kid", "pr"),
                           cache_dir=eval_cache, allow_small=True)
    assert out.json_path == tmp_path / "gen-eval" / "eval.json"
    assert (tmp_path / "gen-eval" / "samples.png").is_file() and (tmp_path / "gen-eval" / "eval.md").is_file()
    rec = out.record
    assert rec["subject"]["kind"] == "samples" and len(rec["subject"]["samples_sha256"]) == 64
    p = rec["results"][0]["protocol"]
    assert (p["n_generated"], p["n_reference"]) == (400, 180)  # default n: all samples; the split has 180
    fid_npz = rec["results"][0]["value"]
    np.save(tmp_path / "gen.npy", real[:, 0].numpy())  # [N, H, W]
    other = tmp_path / "elsewhere"
    rec2 = evaluate_samples(tmp_path / "gen.npy", dataset="digits", metrics=("fid", "kid", "pr"), out=other,
                            cache_dir=eval_cache, allow_small=True).record
    assert (other / "eval.json").is_file()
    assert rec2["results"][0]["value"] == pytest.approx(fid_npz)  # same pixels, same protocol, same number
    assert rec2["results"][0]["protocol_id"] == rec["results"][0]["protocol_id"]
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(real[:200]):
        Image.fromarray(img[0].numpy()).save(folder / f"{i:03d}.png")
    rec3 = evaluate_samples(folder, dataset="digits", metrics=("fid",), cache_dir=eval_cache).record
    assert rec3["results"][0]["protocol"]["n_generated"] == 200
    assert (tmp_path / "pngs-eval" / "eval.json").is_file()


def test_samples_errors(tmp_path, eval_cache):  # noqa: F811
    np.save(tmp_path / "f.npy", np.full((300, 8, 8), 2.0, np.float32))
    with pytest.raises(EvalError, match=r"must lie in \[0, 1\]"):
        evaluate_samples(tmp_path / "f.npy", dataset="digits", cache_dir=eval_cache)
    np.save(tmp_path / "big.npy", np.zeros((300, 16, 16), np.uint8))
    with pytest.raises(EvalError, match="at least 10 samples"):  # the classifier IS needs one per split
        evaluate_samples(tmp_path / "big.npy", dataset="digits", metrics=("is",), n=5, cache_dir=eval_cache)
    with pytest.raises(EvalError, match="text dataset"):
        evaluate_samples(tmp_path / "big.npy", dataset="tinyshakespeare", cache_dir=eval_cache)
    assert not (tmp_path / "f-eval").exists() and not (tmp_path / "big-eval").exists()


def test_read_eval(tmp_path):
    assert read_eval(tmp_path) is None
    (tmp_path / "eval.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(EvalError, match="not a genforge evaluation"):
        read_eval(tmp_path)


def test_long_loops_report_progress_at_most_every_interval_and_at_the_end(capsys, monkeypatch):
    from genforge.evaluation import progress

    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    tick = progress.ticker(True, "generated", every_s=10)
    for done, t in ((100, 5.0), (200, 11.0), (300, 15.0), (400, 22.0), (500, 23.0)):
        now[0] = t
        tick(done, 500)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["eval: generated: 200/500 (11 s, ~16 s left)", "eval: generated: 400/500 (22 s, ~6 s left)",
                     "eval: generated: 500/500 (23 s, ~0 s left)"]
    assert progress.ticker(False, "x") is None
