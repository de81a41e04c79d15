"""Resume is exact: a run killed with SIGKILL and resumed ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from genforge.cli import main
from genforge.training.checkpoint import list_checkpoints

REPO = Path(__file__).resolve().parents[2]
STEPS, EVERY = 60, 10  # a killed run is stopped after its first checkpoint and resumed to the end


def train_cmd(recipe: str | None, out: Path, *extra: str, steps: int = STEPS, every: int = EVERY) -> list[str]:
    """A ``genforge train`` subprocess on one thread."""
    return [sys.executable, "-m", "genforge.cli", *train_args(recipe, out, *extra, steps=steps, every=every),
            "--set", "train.num_threads=1"]


def train_args(recipe: str | None, out: Path, *extra: str, steps: int = STEPS, every: int = EVERY) -> list[str]:
    """The same arguments for ``main`` in this process (its thread count left alone)."""
    return ["train", *([recipe] if recipe else []), "--out", str(out), "--no-progress",
            "--set", f"train.max_steps={steps}", "--set", f"train.checkpoint_every={every}",
            "--set", "train.keep_checkpoints=10", *extra]


def run(cmd: list[str], env: dict | None = None) -> None:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


def final_tensors(run_dir: Path) -> dict:
    step, ckpt = list_checkpoints(run_dir)[-1]
    assert step == STEPS
    out = {f"model/{k}": v for k, v in load_file(ckpt / "model.safetensors").items()}
    if (ckpt / "ema.safetensors").is_file():
        out.update({f"ema/{k}": v for k, v in load_file(ckpt / "ema.safetensors").items()})
    return out


@pytest.mark.parametrize("recipe", ["tiny-gan", pytest.param("tiny-vae", marks=pytest.mark.slow), "tiny-gpt",
                                    "tiny-diffusion", "latent-chain"])  # the VAE's state is a subset of the others'
def test_kill_9_then_resume_matches_uninterrupted(tmp_path, recipe):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    extra: tuple[str, ...] = ()
    env = None
    if recipe == "latent-chain":  # text-to-image latent diffusion standing on a tiny autoencoder run
        ae = tmp_path / "ae"
        assert main(["train", "tiny-autoencoder", "--out", str(ae), "--no-progress", "--set", "train.num_threads=1"]) == 0
        recipe = "tiny-t2i"
        extra += ("--set", "model.family=latent-diffusion", "--set", "model.latent_factor=2", "--set",
                  f"parents.autoencoder={ae}")
    if recipe == "tiny-gpt":  # a small corpus of its own, tokenized into a private cache
        corpus = tmp_path / "corpus"
        corpus.mkdir()
        (corpus / "input.txt").write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(400)))
        extra += ("--data-dir", str(corpus), "--no-verify")  # our own corpus, not the real Tiny Shakespeare
        env = dict(os.environ, GENFORGE_CACHE=str(tmp_path / "cache"))
    # the uninterrupted run and the one to kill train side by side (one thread each)
    uninterrupted = subprocess.Popen(train_cmd(recipe, straight, *extra), cwd=REPO, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=env)
    proc = subprocess.Popen(train_cmd(recipe, killed, *extra), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list_checkpoints(killed):
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = [s for s, _ in list_checkpoints(killed)]
    assert done and done[-1] < STEPS, f"the run was not interrupted mid-way (checkpoints {done})"
    _, err = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, err[-2000:]

    run(train_cmd(None, killed, "--resume", *extra), env)
    a, b = final_tensors(straight), final_tensors(killed)
    assert a.keys() == b.keys()
    different = [k for k in a if not (a[k] == b[k]).all()]
    assert different == [], f"resumed run differs in {different[:5]}"


def test_resume_skips_corrupt_checkpoints_through_the_cli(tmp_path, capsys):
    """The newest checkpoints damaged: resume says which it skipped, continues from the next, ends identical."""
    straight, damaged = tmp_path / "straight", tmp_path / "damaged"
    assert main(train_args("tiny-gan", straight)) == 0  # in this process: the CLI without its start-up
    shutil.copytree(straight, damaged)
    folders = dict(list_checkpoints(damaged))
    for step in (50, 60):  # as if the run had been killed at step 40
        shutil.rmtree(folders[step])
    state = folders[40] / "state.pt"
    state.write_bytes(state.read_bytes()[:-100])  # truncated
    (folders[30] / "ema.safetensors").unlink()

    capsys.readouterr()
    assert main(train_args(None, damaged, "--resume")) == 0
    err = capsys.readouterr().err
    assert "skipped checkpoints/step-00000040: state.pt: " in err
    assert "skipped checkpoints/step-00000030: ema.safetensors missing" in err
    assert f"resumed from {folders[20]} (step 20)" in err
    a, b = final_tensors(straight), final_tensors(damaged)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_resume_with_no_valid_checkpoint_is_one_line_without_pickle_advice(tmp_path, capsys):
    killed = tmp_path / "run"
    assert main(train_args("tiny-gan", killed, steps=20, every=10)) == 0
    for _, folder in list_checkpoints(killed):
        (folder / "state.pt").write_bytes(b"\x00" * 64)
    capsys.readouterr()
    assert main(train_args(None, killed, "--resume", steps=20, every=10)) != 0
    *skips, line = capsys.readouterr().err.strip().splitlines()
    assert [s.split(":")[0] for s in skips] == [f"skipped checkpoints/step-{s:08d}" for s in (20, 10)]
    assert line.startswith("genforge train: error: --resume: none of the 2 checkpoint(s) in ")
    assert "step-00000020: state.pt: 64 bytes, manifest says " in line and "weights_only" not in line


# ---------------------------------------------------------------- what a resume may not change (issue 24, finding 7)

def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != ".lock"}


def _refused(capsys, run_dir: Path, *extra: str) -> str:
    before = _tree(run_dir)
    capsys.readouterr()
    assert main(train_args(None, run_dir, "--resume", *extra, steps=20, every=10)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and _tree(run_dir) == before, err
    return err


def test_resume_refuses_to_change_the_model_or_data_and_names_an_edited_config(tmp_path, capsys):
    import yaml

    run_dir = tmp_path / "run"
    assert main(train_args("tiny-gan", run_dir, steps=10, every=10)) == 0
    assert "cannot change data.name (the run has 'digits')" in _refused(capsys, run_dir, "--set", "data.name=mnist")
    assert "cannot change model.z_dim" in _refused(capsys, run_dir, "--set", "model.z_dim=7")
    config = run_dir / "config.yaml"
    original = config.read_text()
    raw = yaml.safe_load(original)
    raw["model"]["z_dim"] = 7
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    err = _refused(capsys, run_dir)
    assert f"{config} no longer matches the run's checkpoints (" in err and "in step-00000010" in err
    for section in ("train", "model", "data"):
        config.write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(original).items() if k != section}))
        assert f"{config} has no {section}: section" in _refused(capsys, run_dir)
    config.write_text(original)
    assert main(train_args(None, run_dir, "--resume", "--set", "train.max_steps=20", steps=20, every=10)) == 0
