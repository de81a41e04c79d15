"""Text runs end to end: artifacts, full-split validation, the best model, sampling in a new process."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genforge.cli import main
from genforge.sampling.text import generate_text, load_text_model
from genforge.training.logger import read_metrics

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def corpus(tmp_path, monkeypatch) -> Path:
    """A folder with a small play-like ``input.txt``; the token cache goes to tmp_path."""
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "corpus"
    d.mkdir()
    lines = []
    for i in range(300):
        who = ("ROMEO", "JULIET", "NURSE")[i % 3]
        lines.append(f"{who}:\nI pray thee, speak of love and night {i % 7}.\n\n")
    (d / "input.txt").write_text("".join(lines), encoding="utf-8")
    return d


def train(corpus: Path, out: Path, *sets: str) -> None:
    argv = ["train", "tiny-gpt", "--data-dir", str(corpus), "--no-verify", "--out", str(out), "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0


def test_text_run_artifacts_and_validation(corpus, tmp_path):
    out = tmp_path / "run"
    train(corpus, out, "train.max_steps=40", "train.eval_every=20", "train.sample_every=20",
          "train.checkpoint_every=20")
    names = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and "tb" not in p.parts}
    assert names == {".lock", "config.yaml", "model.safetensors", "tokenizer.json", "metrics.jsonl", "samples.txt",
                     "samples/step-00000020.txt", "samples/step-00000040.txt",
                     "best/config.yaml", "best/model.safetensors", "best/tokenizer.json", "best/best.json",
                     "checkpoints/step-00000020/model.safetensors", "checkpoints/step-00000020/state.pt",
                     "checkpoints/step-00000020/manifest.json",
                     "checkpoints/step-00000040/model.safetensors", "checkpoints/step-00000040/state.pt",
                     "checkpoints/step-00000040/manifest.json"}
    records = read_metrics(out)
    evals = [r for r in records if "val/loss" in r]
    assert [r["step"] for r in evals] == [20, 40]
    vocab = len(set((corpus / "input.txt").read_text()))
    n_chars = len((corpus / "input.txt").read_text())
    val_chars = n_chars - int(n_chars * 0.9)
    assert evals[0]["val/tokens"] == val_chars - 1  # every validation token but the first is scored once
    assert evals[-1]["val/loss"] < evals[0]["val/loss"] < math.log(vocab)
    for r in evals:
        assert r["val/perplexity"] == pytest.approx(math.exp(r["val/loss"]), rel=1e-12)
        assert r["val/bpc"] == pytest.approx(r["val/loss"] / math.log(2), rel=1e-12)  # char: 1 token = 1 char
    assert all("tokens_per_s" in r for r in records if "loss" in r)
    best = json.loads((out / "best" / "best.json").read_text())
    assert best["step"] == 40 and best["val/loss"] == evals[-1]["val/loss"]
    published = (out / "samples.txt").read_text()
    model, tok = load_text_model(out)  # the final model's samples, with the run's sample settings
    s = yaml.safe_load((out / "config.yaml").read_text())["sample"]
    fresh = generate_text(model, tok, s["prompt"], n=s["n"], max_new_tokens=s["max_new_tokens"],
                          temperature=s["temperature"], top_k=s["top_k"], top_p=s["top_p"], seed=s["seed"])
    assert published.count("--- sample ") == s["n"] == 2
    assert all(f"--- sample {i} ---\n{t}\n" in published for i, t in enumerate(fresh))


def test_bpe_run_samples_the_same_text_in_a_new_process(corpus, tmp_path):
    out = tmp_path / "bpe"
    train(corpus, out, "data.tokenizer=bpe", "data.vocab_size=300", "train.max_steps=30")
    model, tok = load_text_model(out)
    assert tok.kind == "bpe" and model.config.vocab_size == tok.vocab_size <= 300
    here = generate_text(model, tok, "ROMEO:", max_new_tokens=25, seed=7, temperature=0.8)[0]
    outputs = []
    for i in range(2):
        f = tmp_path / f"s{i}.txt"
        cmd = [sys.executable, "-m", "genforge.cli", "sample", str(out), "--prompt", "ROMEO:", "--seed", "7",
               "--max-new-tokens", "25", "--n", "1", "-o", str(f)]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=dict(os.environ), timeout=120)
        assert proc.returncode == 0, proc.stderr
        outputs.append(f.read_text(encoding="utf-8"))
    assert outputs[0] == outputs[1]
    assert outputs[0].split("\n", 1)[1].rstrip("\n") == here


def test_sample_streams_and_stops(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    train(corpus, out, "train.max_steps=10")
    capsys.readouterr()
    assert main(["sample", str(out), "--prompt", "JULIET:", "--max-new-tokens", "40", "--seed", "1"]) == 0
    streamed = capsys.readouterr().out
    model, tok = load_text_model(out)
    expected = generate_text(model, tok, "JULIET:", max_new_tokens=40, seed=1, temperature=0.8)[0]
    assert streamed == expected + "\n"
    assert main(["sample", str(out), "--prompt", "JULIET:", "--max-new-tokens", "40", "--seed", "1",
                 "--stop", expected[9:11]]) == 0
    assert capsys.readouterr().out == expected[:9] + "\n"


def test_streaming_callback_reassembles_the_text(corpus, tmp_path):
    out = tmp_path / "run"
    train(corpus, out, "train.max_steps=5", "data.tokenizer=byte")
    model, tok = load_text_model(out)
    pieces: dict[int, str] = {0: "", 1: ""}
    texts = generate_text(model, tok, "NURSE: é", n=2, max_new_tokens=30, seed=2, stop=["\n\n"],
                          on_text=lambda i, p: pieces.__setitem__(i, pieces[i] + p))
    assert [f"NURSE: é{pieces[i]}" for i in range(2)] == texts
    assert all("\n\n" not in t for t in texts)


@pytest.mark.parametrize("sets,message", [
    (["model.vocab_size=7"], "vocab_size=7"),
    (["model.block_size=100000"], "block_size"),
])
def test_bad_text_configs(corpus, tmp_path, capsys, sets, message):
    out = tmp_path / "bad"
    argv = ["train", "tiny-gpt", "--data-dir", str(corpus), "--no-verify", "--out", str(out), "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_image_family_on_text_data_is_refused(corpus, tmp_path, capsys):
    argv = ["train", "tiny-gan", "--data-dir", str(corpus), "--no-verify", "--set", "data.name=tinyshakespeare",
            "--out", str(tmp_path / "x"), "--no-progress"]
    assert main(argv) == 2
    assert "text" in capsys.readouterr().err
