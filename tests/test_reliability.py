"""Runs that failed early restart in place, outputs are written as named and never over something that exists,
and every failure is one line with an exit code that says whose fault it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from genforge.cli import main
from genforge.data.tokenizers import CharTokenizer
from genforge.sampling.images import ImagePipeline
from genforge.sampling.text import default_prompt

FAST = ["--no-progress", "--set", "train.max_steps=4", "--set", "train.checkpoint_every=2",
        "--set", "train.sample_every=2", "--set", "train.num_threads=1"]


def _err(capsys) -> str:
    return capsys.readouterr().err.strip()


@pytest.fixture(scope="module")
def gan(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rel") / "gan"
    assert main(["train", "tiny-gan", "--out", str(out), *FAST]) == 0
    return out


def _never_checkpointed(src: Path, dst: Path) -> Path:
    """A copy of ``src`` as a run killed before its first checkpoint leaves it."""
    shutil.copytree(src, dst)
    shutil.rmtree(dst / "checkpoints")
    (dst / "checkpoints").mkdir()
    (dst / "samples.png").unlink()
    (dst / ".model.safetensors.abc123.tmp").write_bytes(b"half a write")  # a killed atomic write
    return dst


# ---------------------------------------------------------------- restarting runs that never checkpointed


def test_out_restarts_a_run_that_never_checkpointed_in_place(gan, tmp_path, capsys):
    run = _never_checkpointed(gan, tmp_path / "early")
    assert main(["train", "tiny-gan", "--out", str(run), *FAST]) == 0
    err = _err(capsys)
    assert "restarting" in err and "holds no checkpoint" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    assert not (run / ".model.safetensors.abc123.tmp").exists()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 4 and steps.count(4) == 1  # one run's log, not two


def test_resume_starts_a_run_that_never_checkpointed_from_step_zero(gan, tmp_path, capsys):
    run = _never_checkpointed(gan, tmp_path / "early")
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert "starting it from step 0 with its own config" in _err(capsys)
    assert (run / "checkpoints" / "step-00000004").is_dir()


@pytest.mark.parametrize("extra", ["notes.txt", "best"])
def test_a_directory_with_more_than_a_failed_run_is_never_cleared(gan, tmp_path, capsys, extra):
    run = _never_checkpointed(gan, tmp_path / "early")
    (run / extra).mkdir() if extra == "best" else (run / extra).write_text("mine")
    before = {p.name for p in run.iterdir()}
    assert main(["train", "tiny-gan", "--out", str(run), *FAST]) == 2
    assert "already exists and is not empty" in _err(capsys)
    assert {p.name for p in run.iterdir()} == before


def test_a_device_this_machine_lacks_fails_before_anything_is_written(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "never"
    assert main(["train", "tiny-gan", "--out", str(out), "--set", "train.device=cuda", *FAST]) == 2
    assert "CUDA is not available" in _err(capsys) and not out.exists()


# ---------------------------------------------------------------- outputs


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".jpg", b"\xff\xd8\xff"), (".jpeg", b"\xff\xd8\xff"),
                                          (".webp", b"RIFF")])
def test_the_suffix_names_the_format(gan, tmp_path, suffix, magic, capsys):
    out = tmp_path / f"grid{suffix}"
    assert main(["sample", str(gan), "--n", "10", "-o", str(out)]) == 0
    assert out.read_bytes().startswith(magic)
    assert Image.open(out).size[0] > 0


def test_an_existing_output_is_replaced_only_with_overwrite(gan, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["sample", str(gan), "--n", "10", "--seed", "1", "-o", str(out)]) == 0
    first = out.read_bytes()
    assert main(["sample", str(gan), "--n", "10", "--seed", "2", "-o", str(out)]) == 2
    assert "already exists; pass --overwrite" in _err(capsys) and out.read_bytes() == first
    assert main(["sample", str(gan), "--n", "10", "--seed", "2", "-o", str(out), "--overwrite"]) == 0
    assert out.read_bytes() != first


def test_compare_keeps_an_earlier_leaderboard_unless_told(gan, tmp_path, capsys):
    board = tmp_path / "board"
    assert main(["compare", str(gan), "--out", str(board)]) == 0
    first = (board / "leaderboard.md").read_text()
    assert main(["compare", str(gan), "--out", str(board)]) == 2
    assert "pass --overwrite" in _err(capsys) and (board / "leaderboard.md").read_text() == first
    assert main(["compare", str(gan), "--out", str(board), "--overwrite"]) == 0


# ---------------------------------------------------------------- labels and prompts


def test_a_label_may_be_a_class_name(tmp_path, capsys):
    root = tmp_path / "shoes"
    rng = np.random.default_rng(0)
    for name, level in (("ankle_boot", 40), ("sneaker", 200)):
        (root / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(level - 30, level + 30, (8, 8)).astype(np.uint8)).save(root / name / f"{i}.png")
    run = tmp_path / "run"
    assert main(["train", "tiny-gan", "--out", str(run), "--set", f"data.name=imagefolder:{root}", *FAST]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["class_names"] == ["ankle_boot", "sneaker"]
    pipe = ImagePipeline.from_run(run)
    assert pipe.label_id("ankle_boot") == 0 and pipe.label_id("Sneaker") == 1 and pipe.label_id("ank") == 0
    assert main(["sample", str(run), "--n", "4", "--label", "sneaker", "-o", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").text["label"] == "1"
    assert main(["sample", str(run), "--label", "sandal"]) == 2
    assert "label 'sandal' is not a class name; classes: 0=ankle_boot, 1=sneaker" in _err(capsys)


def test_the_default_prompt_comes_from_the_corpus():
    assert default_prompt(CharTokenizer("ab\ncd")) == "\n"
    assert default_prompt(CharTokenizer("ab cd")) == " "
    assert default_prompt(CharTokenizer("zyx")) == "x"


# ---------------------------------------------------------------- exit codes


def test_ctrl_c_and_crashes_are_one_line_with_exit_1(gan, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ImagePipeline, "generate", interrupted)
    assert main(["sample", str(gan), "-o", str(tmp_path / "x.png")]) == 1
    assert _err(capsys) == "genforge sample: interrupted (nothing half-written was kept)"
    assert not (tmp_path / "x.png").exists()

    def broken(*args, **kwargs):
        raise RuntimeError("something\nwent wrong")

    monkeypatch.setattr(ImagePipeline, "generate", broken)
    assert main(["sample", str(gan), "-o", str(tmp_path / "x.png")]) == 1
    assert _err(capsys) == ("genforge sample: error: RuntimeError: something went wrong "
                            "(GENFORGE_DEBUG=1 shows the traceback)")
    monkeypatch.setenv("GENFORGE_DEBUG", "1")
    with pytest.raises(RuntimeError, match="went wrong"):
        main(["sample", str(gan), "-o", str(tmp_path / "x.png")])
