"""Chains in one command: a recipe whose ``parents`` name recipes trains them into RUN/parents/<role> first, reuses
or continues them when the command is run again, and refuses what it cannot do in one line."""

from __future__ import annotations

import json

import pytest
import yaml

from genforge import models
from genforge.cli import main
from genforge.rundir import RunDir, weights_sha256

ONE_THREAD = ("--no-progress", "--set", "train.num_threads=1")


def test_one_command_trains_the_parent_then_the_child_standing_on_it(tmp_path, capsys):
    run = tmp_path / "chain"
    assert main(["train", "tiny-ldm", "--out", str(run), *ONE_THREAD, "--set", "data.image_size=12"]) == 0
    parent = run / "parents" / "autoencoder"
    record = json.loads((run / "parents" / "autoencoder.json").read_text())
    assert record["recipe"] == "tiny-autoencoder" and record["stopped"] == "max_steps" and record["steps"] == 20
    assert record["sha256"] == weights_sha256(RunDir(parent).weights)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["parents"]["autoencoder"] == {"path": str(parent.resolve()), "sha256": record["sha256"]}
    model = models.load(run)
    assert model.family == "latent-diffusion" and model.autoencoder.family == "autoencoder"
    trained_on = yaml.safe_load((parent / "config.yaml").read_text())["data"]
    assert trained_on["image_size"] == 12 and trained_on["caption_template"] == "digit {label}"  # the child's data
    before = (parent / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["train", "tiny-ldm", "--out", str(run), *ONE_THREAD]) == 2  # a trained child is never overwritten
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (parent / "model.safetensors").read_bytes() == before


def test_the_same_command_continues_an_unfinished_parent_and_reuses_a_finished_one(tmp_path, capsys):
    run = tmp_path / "chain"
    parent = run / "parents" / "autoencoder"
    # a parent stopped at step 10 of its 20 (as a killed run leaves it: a checkpoint, no record of finishing)
    assert main(["train", "tiny-autoencoder", "--out", str(parent), *ONE_THREAD, "--set", "train.max_steps=10"]) == 0
    cfg = yaml.safe_load((parent / "config.yaml").read_text())
    cfg["train"]["max_steps"] = 20
    (parent / "config.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["train", "tiny-ldm", "--out", str(run), *ONE_THREAD, "--set", "train.max_steps=5"]) == 0
    assert "continuing parents.autoencoder" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (parent / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 20 and steps.count(10) == 1  # resumed at 10, not retrained from 0
    assert json.loads((run / "parents" / "autoencoder.json").read_text())["steps"] == 20
    child = tmp_path / "child2"
    (child / "parents").mkdir(parents=True)
    (child / "parents" / "autoencoder").symlink_to(parent, target_is_directory=True)
    (child / "parents" / "autoencoder.json").write_text((run / "parents" / "autoencoder.json").read_text())
    before = (parent / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["train", "tiny-ldm", "--out", str(child), *ONE_THREAD, "--set", "train.max_steps=5"]) == 0
    assert "trained earlier" in capsys.readouterr().out
    assert (parent / "model.safetensors").read_bytes() == before


def test_resume_of_a_chain_without_its_run_yet_says_what_to_do(tmp_path, capsys):
    run = tmp_path / "chain"
    (run / "parents" / "autoencoder").mkdir(parents=True)
    assert main(["train", "--resume", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "only the parent runs of a chain" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("spec, match", [
    ("{recipe: tiny-autoencoder, steps: 3}", "parents.autoencoder must be a run directory or"),
    ("{recipe: no-such-recipe}", "no-such-recipe")])
def test_a_bad_parent_recipe_is_one_line_and_trains_nothing(tmp_path, capsys, spec, match):
    run = tmp_path / "chain"
    assert main(["train", "tiny-ldm", "--out", str(run), *ONE_THREAD, "--set", f"parents.autoencoder={spec}"]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
    assert not (run / "parents" / "autoencoder" / "model.safetensors").exists()
