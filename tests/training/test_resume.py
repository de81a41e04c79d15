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

from genforge.training.checkpoint import list_checkpoints

REPO = Path(__file__).resolve().parents[2]
STEPS, EVERY = 300, 50


def train_cmd(recipe: str | None, out: Path, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "genforge.cli", "train"] + ([recipe] if recipe else [])
    return args + ["--out", str(out), "--no-progress", "--set", f"train.max_steps={STEPS}",
                   "--set", f"train.checkpoint_every={EVERY}", "--set", "train.keep_checkpoints=10",
                   "--set", "train.num_threads=1", *extra]


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


@pytest.mark.parametrize("recipe", ["tiny-gan", "tiny-vae", "tiny-gpt", "tiny-diffusion"])
def test_kill_9_then_resume_matches_uninterrupted(tmp_path, recipe):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    extra: tuple[str, ...] = ()
    env = None
    if recipe == "tiny-gpt":  # a small corpus of its own, tokenized into a private cache
        corpus = tmp_path / "corpus"
        corpus.mkdir()
        (corpus / "input.txt").write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(400)))
        extra = ("--data-dir", str(corpus), "--no-verify")  # our own corpus, not the real Tiny Shakespeare
        env = dict(os.environ, GENFORGE_CACHE=str(tmp_path / "cache"))
    run(train_cmd(recipe, straight, *extra), env)

    proc = subprocess.Popen(train_cmd(recipe, killed, *extra), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list_checkpoints(killed):
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = [s for s, _ in list_checkpoints(killed)]
    assert done and done[-1] < STEPS, f"the run was not interrupted mid-way (checkpoints {done})"

    run(train_cmd(None, killed, "--resume", *extra), env)
    a, b = final_tensors(straight), final_tensors(killed)
    assert a.keys() == b.keys()
    different = [k for k in a if not (a[k] == b[k]).all()]
    assert different == [], f"resumed run differs in {different[:5]}"


def test_resume_skips_corrupt_checkpoints_through_the_cli(tmp_path):
    """The newest checkpoints damaged: resume says which it skipped, continues from the next, ends identical."""
    straight, damaged = tmp_path / "straight", tmp_path / "damaged"
    run(train_cmd("tiny-gan", straight))
    shutil.copytree(straight, damaged)
    folders = dict(list_checkpoints(damaged))
    for step in (250, 300):  # as if the run had been killed at step 200
        shutil.rmtree(folders[step])
    state = folders[200] / "state.pt"
    state.write_bytes(state.read_bytes()[:-100])  # truncated
    (folders[150] / "ema.safetensors").unlink()

    proc = subprocess.run(train_cmd(None, damaged, "--resume"), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipped checkpoints/step-00000200: state.pt: " in proc.stderr
    assert "skipped checkpoints/step-00000150: ema.safetensors missing" in proc.stderr
    assert f"resumed from {folders[100]} (step 100)" in proc.stderr
    a, b = final_tensors(straight), final_tensors(damaged)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_resume_with_no_valid_checkpoint_is_one_line_without_pickle_advice(tmp_path):
    killed = tmp_path / "run"
    run(train_cmd("tiny-gan", killed, "--set", "train.max_steps=100"))
    for _, folder in list_checkpoints(killed):
        (folder / "state.pt").write_bytes(b"\x00" * 64)
    proc = subprocess.run(train_cmd(None, killed, "--resume"), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    *skips, line = proc.stderr.strip().splitlines()
    assert [s.split(":")[0] for s in skips] == [f"skipped checkpoints/step-{s:08d}" for s in (100, 50)]
    assert line.startswith("genforge train: error: --resume: none of the 2 checkpoint(s) in ")
    assert "step-00000100: state.pt: 64 bytes, manifest says " in line and "weights_only" not in line
