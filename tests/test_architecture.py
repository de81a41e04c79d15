"""The architecture's promises: a run's task is recorded (old runs inferred in one place), every generation goes
through the sampling pipelines, sample options are typed and checked, capabilities are declared, and the README's
layout is the layering test's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from genforge.cli import main
from genforge.config import ConfigError
from genforge.models.gan import GAN, GANConfig
from genforge.models.gpt import GPT, GPTConfig
from genforge.models.vae import VAE, VAEConfig
from genforge.rundir import RunDir, RunDirError, upgrade_config
from genforge.sampling.images import ImagePipeline
from genforge.sampling.text import TextPipeline
from genforge.tasks import open_run

from .test_layering import ALLOWED, BASE

REPO = Path(__file__).resolve().parents[1]
FAST = ["--no-progress", "--set", "train.max_steps=4", "--set", "train.checkpoint_every=2",
        "--set", "train.sample_every=2", "--set", "train.num_threads=1"]


def _corpus(path: Path) -> Path:
    path.write_text("".join(f"line {i % 17} of a small corpus, with words.\n" for i in range(400)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("arch")
    out = {}
    for name in ("tiny-gan", "tiny-vae"):
        out[name] = root / name
        assert main(["train", name, "--out", str(out[name]), *FAST]) == 0
    out["tiny-gpt"] = root / "tiny-gpt"
    corpus = _corpus(root / "corpus.txt")
    assert main(["train", "tiny-gpt", "--out", str(out["tiny-gpt"]), "--set", f"data.name=text:{corpus}",
                 "--set", "train.eval_every=2", *FAST]) == 0
    return out


# ---------------------------------------------------------------- the run's task


def test_the_task_is_recorded_when_the_run_is_created(runs):
    for name, task in (("tiny-gan", "image"), ("tiny-vae", "image"), ("tiny-gpt", "text")):
        raw = yaml.safe_load((runs[name] / "config.yaml").read_text())
        assert raw["task"] == task
        assert RunDir(runs[name]).task() == task


def test_the_recorded_task_wins_over_the_files_present(runs, tmp_path):
    raw = yaml.safe_load((runs["tiny-gan"] / "config.yaml").read_text())
    (tmp_path / "tokenizer.json").write_text("{}")  # a stray file does not make an image run a text run
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    assert RunDir(tmp_path).task() == "image"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**raw, "task": "audio"}))
    with pytest.raises(RunDirError, match="unknown task 'audio'; known tasks: image, text"):
        RunDir(tmp_path).task()


def test_old_runs_without_a_task_still_load_sample_evaluate_and_resume(runs, tmp_path, capsys):
    import shutil

    for name, task, foreign in (("tiny-gan", "image", "temperature"), ("tiny-gpt", "text", "nrow")):
        old = tmp_path / name
        shutil.copytree(runs[name], old)
        raw = yaml.safe_load((old / "config.yaml").read_text())
        del raw["task"]  # the format before runs recorded their task: one sample section with every key
        raw["sample"].update({"prompt": None, "max_new_tokens": 500, "temperature": 0.8, "top_k": None,
                              "top_p": None, "nrow": 0, "batch_size": 256})
        raw["sample"].pop("label", None), raw["sample"].pop("stop", None)
        (old / "config.yaml").write_text(yaml.safe_dump(raw))
        assert RunDir(old).task() == task
        upgraded = upgrade_config(raw, old)
        assert upgraded["task"] == task and foreign not in upgraded["sample"]
        pipe = open_run(old)
        assert pipe.task == task
        assert main(["train", "--out", str(old), "--resume", "--set", "train.max_steps=6", "--no-progress"]) == 0
    capsys.readouterr()


# ---------------------------------------------------------------- one sampling path


def test_train_sample_and_eval_all_draw_through_the_pipelines(tmp_path, monkeypatch, capsys):
    calls: list[str] = []
    for cls in (ImagePipeline, TextPipeline):
        original = cls.generate

        def spy(self, *args, _original=original, **kwargs):
            calls.append(type(self).__name__)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "generate", spy)
    gan = tmp_path / "gan"
    assert main(["train", "tiny-gan", "--out", str(gan), *FAST, "--set", "train.eval_every=2",
                 "--set", "train.eval_samples=20"]) == 0
    trained = len(calls)
    assert trained >= 4 and set(calls) == {"ImagePipeline"}  # grids at steps 2 and 4, proxy FID at 2 and 4
    assert main(["sample", str(gan), "--n", "8", "-o", str(tmp_path / "s.png")]) == 0
    assert len(calls) == trained + 1
    assert main(["eval", str(gan), "--metrics", "fid", "--n", "150", "--allow-small", "--no-progress"]) == 0
    assert len(calls) == trained + 2
    gpt = tmp_path / "gpt"
    assert main(["train", "tiny-gpt", "--out", str(gpt), "--set", f"data.name=text:{_corpus(tmp_path / 'c.txt')}",
                 *FAST]) == 0
    assert calls.count("TextPipeline") == 2  # samples at steps 2 and 4
    assert main(["sample", str(gpt), "--prompt", "line", "--max-new-tokens", "5"]) == 0
    assert main(["eval", str(gpt), "--metrics", "distinct", "--n", "3", "--max-new-tokens", "8",
                 "--no-progress"]) == 0
    assert calls.count("TextPipeline") == 4
    capsys.readouterr()


# ---------------------------------------------------------------- typed sample options


def test_an_unknown_sample_option_names_itself_and_every_valid_one(runs, capsys):
    code = main(["sample", str(runs["tiny-vae"]), "--set", "sample.nosie=true"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "unknown sample option 'nosie'; did you mean 'noise'?" in err
    assert "(valid options: batch_size, n, noise, nrow, seed)" in err  # an unconditional VAE takes no label
    pipe = ImagePipeline.from_run(runs["tiny-gan"])
    with pytest.raises(ConfigError, match=r"'steps' \(valid options: batch_size, label, n, nrow, seed\)"):
        pipe.parse({"steps": 20})
    text = TextPipeline.from_run(runs["tiny-gpt"])
    with pytest.raises(ConfigError, match="valid options: max_new_tokens, n, prompt, seed, stop, temperature, "
                                          "top_k, top_p"):
        text.parse({"lable": 3})
    with pytest.raises(ConfigError, match=r"does not take a class label \(label\); it takes a text prompt"):
        text.parse({"label": 3})  # a condition the model does not take is refused by name
    with pytest.raises(ConfigError, match="temperature must be >= 0"):
        text.parse({"temperature": -1})


def test_a_family_option_works_identically_from_set_flags_and_python(runs, tmp_path, capsys):
    vae = runs["tiny-vae"]
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["sample", str(vae), "--n", "6", "--seed", "2", "--set", "sample.noise=true", "-o", str(a)]) == 0
    pipe = ImagePipeline.from_run(vae)
    request, options = pipe.parse({"n": 6, "seed": 2, "noise": True})
    pipe.write(b, request, options)
    assert a.read_bytes() == b.read_bytes()
    mean = tmp_path / "mean.png"
    assert main(["sample", str(vae), "--n", "6", "--seed", "2", "-o", str(mean)]) == 0
    assert mean.read_bytes() != a.read_bytes()  # noise=true draws pixels, the default is the decoder mean
    capsys.readouterr()


def test_a_bad_sample_section_in_a_recipe_fails_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "never"
    code = main(["train", "tiny-gan", "--out", str(out), "--set", "sample.temperature=0.5", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "unknown sample option 'temperature'" in err
    assert not out.exists()


# ---------------------------------------------------------------- declared capabilities


def test_capabilities_are_declared_by_each_family():
    gan = GAN(GANConfig(channels=1, image_size=8, conditional=True, num_classes=10, g_width=4, d_width=4, z_dim=4))
    vae = VAE(VAEConfig(channels=1, image_size=8, latent_dim=2, width=4))
    gpt = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=8))
    assert gan.capabilities() == ("sample", "conditional", "interpolate", "inpaint")
    assert vae.capabilities() == ("sample", "reconstruct", "interpolate", "invert", "inpaint", "likelihood:bound")
    assert gpt.capabilities() == ("sample", "token_nll", "stream", "likelihood:exact")
    info = vae.describe_likelihood(k=7)
    assert info.importance_samples == 7 and info.stochastic and "K=7" in info.estimate
    assert gan.describe_likelihood() is None
    with pytest.raises(NotImplementedError, match="gan"):
        gan.log_likelihood({})


# ---------------------------------------------------------------- the layers, as the README shows them


def test_the_readme_layout_shows_the_layering_tests_arrows():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    shown: dict[str, set[str]] = {}
    for line in block.splitlines():
        m = re.match(r"\s+([a-z_]+)(?:/|\.py)\s.*\(imports (.*)\)\s*$", line)
        if m:
            names = {n.strip() for n in m.group(2).replace("base", ",".join(sorted(BASE))).split(",")}
            shown[m.group(1)] = {n for n in names if n and n != "nothing"}
    package = REPO / "genforge"
    exists = {k for k in ALLOWED if (package / k).is_dir() or (package / f"{k}.py").is_file()}
    layers = {k: v & exists for k, v in ALLOWED.items() if k in exists and k not in BASE}
    assert set(shown) == set(layers), "every layer of the layering test has one README line, and no other"
    for layer, allowed in layers.items():
        assert shown[layer] == allowed, layer


def test_family_options_can_be_given_as_flags(runs, tmp_path, capsys):
    vae = runs["tiny-vae"]
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["sample", str(vae), "--n", "6", "--seed", "2", "--noise", "-o", str(a)]) == 0
    assert main(["sample", str(vae), "--n", "6", "--seed", "2", "--set", "sample.noise=true", "-o", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert main(["sample", str(vae), "--steps", "20"]) == 2
    assert "unknown sample option 'steps'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # only sample takes family flags
        main(["train", "tiny-vae", "--steps", "20"])
    assert e.value.code == 2 and "unrecognized arguments: --steps 20" in capsys.readouterr().err


def test_eval_draws_with_the_familys_options_and_records_them(tmp_path, capsys):
    import json

    run = tmp_path / "diffusion"
    assert main(["train", "tiny-diffusion", "--out", str(run), *FAST]) == 0
    ids = {}
    for steps in ("3", "5"):
        assert main(["eval", str(run), "--metrics", "fid,kid", "--n", "150", "--allow-small", "--kid-subset-size",
                     "50", "--steps", steps, "--sampler", "ddim", "--no-progress"]) == 0
        record = json.loads((run / "eval.json").read_text())
        fid = next(r for r in record["results"] if r["metric"] == "fid")
        kid = next(r for r in record["results"] if r["metric"] == "kid")
        assert fid["protocol"]["params"]["sample"] == {"sampler": "ddim", "steps": int(steps)}
        assert kid["protocol"]["params"]["sample"] == fid["protocol"]["params"]["sample"]
        ids[steps] = fid["protocol_id"]
    assert ids["3"] != ids["5"]  # a FID at 3 sampler steps is never ranked with one at 5
    assert main(["eval", str(run), "--metrics", "fid", "--n", "150", "--allow-small", "--steps", "0"]) == 2
    assert "steps must be >= 1" in capsys.readouterr().err
