"""The genforge command end to end: artifacts, sampling metadata, and clear errors that destroy nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from genforge.cli import COMMANDS, build_parser, main

FAST = ["--no-progress", "--set", "train.max_steps=6", "--set", "train.checkpoint_every=3",
        "--set", "train.sample_every=3"]


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def fail(capsys, argv: list[str], pattern: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert pattern in err, err
    assert "Traceback" not in err
    return err


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["-h"])
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out
    for name in COMMANDS:  # every subcommand has its own complete help
        with pytest.raises(SystemExit):
            main([name, "-h"])
        assert "usage: genforge " + name in capsys.readouterr().out


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "tiny-gan", "--out", str(out), *FAST]) == 0
    return out


def test_train_writes_the_run_directory(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {"config.yaml", "model.safetensors", "metrics.jsonl", "tb", "samples", "samples.png",
            "checkpoints"} <= names
    assert sorted(p.name for p in (trained_run / "samples").iterdir()) == ["step-00000003.png",
                                                                          "step-00000006.png"]
    cfg = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert cfg["model"]["family"] == "gan" and cfg["model"]["image_size"] == 8
    assert cfg["model"]["num_classes"] == 10 and cfg["train"]["max_steps"] == 6
    assert "genforge_version" in cfg


def test_sample_png_carries_metadata_and_is_seeded(trained_run, tmp_path, capsys):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    assert main(["sample", str(trained_run), "--n", "12", "--label", "3", "--seed", "5", "-o", str(a)]) == 0
    assert main(["sample", str(trained_run), "--n", "12", "--label", "3", "--seed", "5", "-o", str(b)]) == 0
    assert main(["sample", str(trained_run), "--n", "12", "--label", "3", "--seed", "6", "-o", str(c)]) == 0
    img = Image.open(a)
    assert img.text["genforge_model"] == "gan" and img.text["seed"] == "5" and img.text["label"] == "3"
    assert (np.asarray(img) == np.asarray(Image.open(b))).all()
    assert not (np.asarray(img) == np.asarray(Image.open(c))).all()
    fail(capsys, ["sample", str(trained_run), "--label", "10"], "label must be in [0, 9], got 10")


def test_existing_run_dir_is_never_overwritten(trained_run, capsys):
    before = tree_digest(trained_run)
    fail(capsys, ["train", "tiny-gan", "--out", str(trained_run), *FAST], "already exists")
    assert tree_digest(trained_run) == before


def test_resume_continues_to_new_max_steps(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "tiny-vae", "--out", str(out), *FAST]) == 0
    assert main(["train", "--out", str(out), "--resume", "--no-progress", "--set", "train.max_steps=9"]) == 0
    assert "resumed from" in capsys.readouterr().err
    assert (out / "checkpoints" / "step-00000009").is_dir()


@pytest.mark.parametrize("argv,pattern", [
    (["train", "mnist-dcgn"], "unknown recipe 'mnist-dcgn'; did you mean 'mnist-dcgan'?"),
    (["train", "tiny-gan", "--set", "train.lrr=0.1"], "did you mean 'train.lr'?"),
    (["train", "tiny-gan", "--set", "model.z_dimm=3"], "did you mean 'model.z_dim'?"),
    (["train", "tiny-gan", "--set", "train.max_steps=abc"], "train.max_steps: expected an integer"),
    (["train", "tiny-gan", "--set", "train.lr=-1"], "train.lr must be positive"),
    (["train", "--config", "no/such/recipe.yaml"], "config file not found"),
])
def test_bad_config_fails_before_any_work(tmp_path, capsys, argv, pattern):
    out = tmp_path / "never"
    fail(capsys, argv + ["--out", str(out)], pattern)
    assert not out.exists()


def test_missing_data_dir_names_the_files(tmp_path, capsys):
    out = tmp_path / "never"
    err = fail(capsys, ["train", "mnist-dcgan", "--data-dir", str(tmp_path / "nowhere"), "--out", str(out)],
               "train-images-idx3-ubyte")
    assert "nowhere" in err
    assert not out.exists()


def test_empty_image_folder_is_an_error(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    fail(capsys, ["train", "tiny-gan", "--set", f"data.name=imagefolder:{tmp_path / 'imgs'}",
                  "--out", str(tmp_path / "never")], str(tmp_path / "imgs"))
    assert not (tmp_path / "never").exists()


def test_corrupt_image_is_reported_and_skipped(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="broken.png"):
        code = main(["train", "tiny-gan", "--set", f"data.name=imagefolder:{folder}", "--set", "data.image_size=8",
                     "--set", "model.conditional=false", "--set", "train.batch_size=8", "--out", str(out), *FAST])
    assert code == 0
    assert (out / "samples.png").is_file()


def test_resume_without_checkpoint_is_an_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    fail(capsys, ["train", "--out", str(empty), "--resume"], "not a genforge run")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: {family: gan}\n")
    before = tree_digest(run)
    fail(capsys, ["train", "--out", str(run), "--resume"], "no checkpoint")
    assert tree_digest(run) == before


def test_recipes_and_datasets_commands(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "digits-dcgan" in out and "(default)" in out and "mnist-vae" in out
    assert main(["recipes", "show", "mnist-dcgan"]) == 0
    assert "family: gan" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "mnist" in out and "fashion-mnist" in out and "digits" in out and "imagefolder:PATH" in out


def test_parser_builds_without_importing_torch():
    import subprocess
    import sys

    code = "import sys; from genforge.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert build_parser().prog == "genforge"
