"""Every shipped recipe's own intervals run to the end under torchrun with 2 processes (gloo, loopback).

A data-parallel job dies when its ranks take different collectives; what a step does (sample, evaluate,
checkpoint, log, stop) must follow from the config and the step alone. So each recipe in
``genforge/recipes`` runs with its own ``train`` section: ``max_steps`` and its ``sample_every``,
``eval_every``, ``checkpoint_every`` and ``log_every`` are all divided by their greatest common divisor
when ``max_steps`` is over ``MAX_STEPS`` (a proportional scale-down that keeps every coincidence of the
intervals, and where the last step falls among them: ``mnist-dcgan``'s 3150 steps with samples and
checkpoints every 1000 become 63 with both every 20). To stay fast and offline, the model, data and sample
sections are the family's tiny recipe's (``tiny-<family>``: 8×8 digits) or, for text, a small local
corpus with the recipe's own tokenizer; the global batch is 16.

The default suite runs one recipe per family and per interval pattern; ``-m slow`` runs them all.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from .test_distributed import _env, _free_port, corpus  # noqa: F401 - corpus: the same small corpus fixture

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no gloo backend")

RECIPES = Path(__file__).resolve().parents[2] / "genforge" / "recipes"
INTERVALS = ("sample_every", "eval_every", "checkpoint_every", "log_every")
MAX_STEPS = 64
# One per family and per interval pattern (scaled), by default: samples = checkpoints, ending on one
# (digits-diffusion, tiny-vae: the issue's own, mnist-sr: with max_minutes), ending between them
# (mnist-dcgan), none but the end's (shakespeare-char); with evaluations too (text-bpe), in
# test_resume_of_a_two_rank_run_runs_to_the_end. The full sweep (-m slow, 14 recipes one at a time) took 98 s
# to 5 minutes on 2 shared cores, depending on their load; the default subset side by side about 40 s.
DEFAULT_SUBSET = ("digits-diffusion", "mnist-dcgan", "mnist-sr", "shakespeare-char", "tiny-vae")


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _tiny_for(recipe: dict) -> dict:
    """The shipped tiny recipe of the recipe's family (and kind: a text-to-image recipe gets tiny-t2i)."""
    tiny = [_load(p) for p in sorted(RECIPES.glob("tiny-*.yaml"))]
    def kind(r: dict) -> tuple:
        return r["model"]["family"], bool(r["model"].get("prompted")), r["model"].get("backbone", "unet")

    found = [r for r in tiny if kind(r) == kind(recipe) and not r.get("parents")]
    if not found:  # a family that stands on a parent run (a distilled student, latent diffusion) has none
        pytest.skip(f"no tiny recipe of family {kind(recipe)[0]} stands alone (it needs a parent run)")
    return found[0]


def scaled_train(train: dict) -> dict:
    """The recipe's ``train`` section, its step counts divided by their gcd when ``max_steps`` > MAX_STEPS."""
    from genforge.config import TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    out = dict(train)
    for key in ("max_steps", *INTERVALS):
        out.setdefault(key, defaults[key])
    counts = [out["max_steps"], *(out[k] for k in INTERVALS if out[k])]
    if out["max_steps"] > MAX_STEPS:
        d = math.gcd(*counts)
        out.update({k: out[k] // d for k in ("max_steps", *INTERVALS)})
    out["log_every"] = max(out["log_every"], 1)
    assert out["max_steps"] <= MAX_STEPS, f"{train} does not scale down to {MAX_STEPS} steps; pick another scale"
    return out


def test_scaling_keeps_where_the_last_step_falls():
    train = scaled_train({"max_steps": 3150, "sample_every": 1000, "checkpoint_every": 1000, "log_every": 100})
    assert train == {"max_steps": 63, "sample_every": 20, "checkpoint_every": 20, "log_every": 2, "eval_every": 0}
    assert scaled_train({"max_steps": 20, "sample_every": 10, "log_every": 5})["sample_every"] == 10  # unscaled


def recipe_config(name: str, corpus: Path) -> dict:
    """Recipe ``name`` with its own (scaled) training intervals and the family's tiny model, data and samples."""
    recipe = _load(RECIPES / f"{name}.yaml")
    family = recipe["model"]["family"]
    tiny = _tiny_for(recipe)
    data = dict(tiny["data"])
    if family == "gpt":  # the recipe's tokenizer on a small local corpus
        data = {"name": f"text:{corpus}", "tokenizer": recipe["data"].get("tokenizer", "char")}
        if "vocab_size" in recipe["data"]:
            data["vocab_size"] = min(recipe["data"]["vocab_size"], 300)
    train = dict(scaled_train(recipe["train"]), batch_size=16, progress=False, num_threads=1)
    return {"data": data, "model": tiny["model"], "train": train, "sample": tiny.get("sample", {})}


def _torchrun(args: list[str], timeout: float = 240, wait: bool = True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1", "--rdzv_backend=c10d",
           f"--rdzv_endpoint=127.0.0.1:{_free_port()}", "--max_restarts=0", "-m", "genforge", *args]
    if not wait:
        return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _check_finished(out: Path, train: dict, r: subprocess.CompletedProcess, logged_before: list[int] = ()) -> None:
    """The run ended at ``max_steps`` with its checkpoint, every due sample and every due log line."""
    log = r.stdout[-2000:] + r.stderr[-4000:]
    assert r.returncode == 0, log
    assert "lost contact" not in r.stderr, log
    last = train["max_steps"]
    assert (out / "checkpoints" / f"step-{last:08d}").is_dir(), log
    samples = {p.stem for p in (out / "samples").iterdir()}
    every = train["sample_every"]
    start = logged_before[-1] if logged_before else 0
    due = {s for s in range(start + 1, last + 1) if every and s % every == 0} | {last}
    assert {f"step-{s:08d}" for s in due} <= samples, (sorted(samples), log)
    steps = [s for s in range(start + 1, last + 1) if s % train["log_every"] == 0 or s == last]
    assert _logged(out) == [*logged_before, *steps], log


def _logged(out: Path) -> list[int]:
    """The steps of the training log lines (not the evaluation records) in ``metrics.jsonl``."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if "lr" in r]


ALL = sorted(p.stem for p in RECIPES.glob("*.yaml"))


def test_the_default_subset_is_shipped():
    assert set(DEFAULT_SUBSET) <= set(ALL)


def _start(name: str, corpus: Path, root: Path) -> tuple[dict, Path, subprocess.Popen]:
    cfg = recipe_config(name, corpus)
    path, out = root / f"{name}.yaml", root / name
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return cfg, out, _torchrun(["train", "--config", str(path), "--out", str(out)], wait=False)


def _finish(cfg: dict, out: Path, job: subprocess.Popen, name: str) -> None:
    try:
        stdout, stderr = job.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        job.kill()
        stdout, stderr = job.communicate()
    r = subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)
    try:
        _check_finished(out, cfg["train"], r)
    except AssertionError as e:
        raise AssertionError(f"{name}: {e}") from None


def test_recipe_intervals_run_to_the_end_on_two_ranks(corpus, tmp_path):
    """The default subset, side by side (one torchrun of 2 single-thread ranks each)."""
    jobs = [(name, *_start(name, corpus, tmp_path)) for name in DEFAULT_SUBSET]
    for name, cfg, out, job in jobs:
        _finish(cfg, out, job, name)


@pytest.mark.slow  # the default suite runs DEFAULT_SUBSET (above); -m slow every shipped recipe, one at a time
@pytest.mark.parametrize("name", ALL)
def test_every_recipe_intervals_run_to_the_end_on_two_ranks(name, corpus, tmp_path):
    _finish(*_start(name, corpus, tmp_path), name)


def test_resume_of_a_two_rank_run_runs_to_the_end(corpus, tmp_path):
    """text-bpe's intervals (samples, evaluations and checkpoints every 10 scaled steps, 20 steps): 5 steps,
    then --resume, which passes step 10 (all three due) and ends on step 20, a sampling step that is not a
    checkpoint step (the last step's checkpoint comes after the loop)."""
    cfg = recipe_config("text-bpe", corpus)
    path, out = tmp_path / "text-bpe.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    first = dict(cfg["train"], max_steps=5)
    _check_finished(out, first, _torchrun(["train", "--config", str(path), "--out", str(out),
                                           "--set", "train.max_steps=5"]))
    before = _logged(out)
    r = _torchrun(["train", "--out", str(out), "--resume", "--set", f"train.max_steps={cfg['train']['max_steps']}"])
    _check_finished(out, cfg["train"], r, logged_before=before)
    assert "resumed from" in r.stderr and "(step 5)" in r.stderr, r.stderr[-3000:]
    assert (out / "checkpoints" / "step-00000010").is_dir()


def _children(pid: int) -> list[int]:
    r = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (killed, not yet reaped by its new parent) is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return True


def _lock_free(run: Path) -> bool:
    from genforge.rundir import RunDirError, RunLock

    try:
        RunLock(run).acquire().release()
    except RunDirError:
        return False
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pgrep and /proc")
def test_ranks_end_when_the_launcher_is_killed(corpus, tmp_path):
    from genforge.rundir import RunDirError, RunLock

    out = tmp_path / "orphans"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--rdzv_backend=c10d",
           f"--rdzv_endpoint=127.0.0.1:{_free_port()}", "--max_restarts=0", "-m", "genforge", "train", "tiny-gpt",
           "--out", str(out), "--set", f"data.name=text:{corpus}", "--set", "train.max_steps=1000000",
           "--set", "train.progress=false", "--set", "train.checkpoint_every=0", "--set", "train.sample_every=0"]
    job = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    ranks: list[int] = []
    try:
        deadline = time.time() + 120
        while not (out / "metrics.jsonl").is_file() and time.time() < deadline and job.poll() is None:
            time.sleep(0.1)
        ranks = _children(job.pid)
        assert len(ranks) == 2 and (out / "metrics.jsonl").is_file(), ranks
        with pytest.raises(RunDirError, match="in use"):
            RunLock(out).acquire()  # rank 0 holds the run
        os.kill(job.pid, signal.SIGKILL)  # the launcher alone
        job.wait(timeout=10)
        t = time.time()
        while (any(_alive(p) for p in ranks) or not _lock_free(out)) and time.time() - t < 10:
            time.sleep(0.1)  # a killed process's leader is a zombie before its last thread lets go of its files
        assert not any(_alive(p) for p in ranks), f"ranks {ranks} outlived their launcher by 10 s"
        assert _lock_free(out), f"the run lock is still held 10 s after the launcher was killed: {RunLock(out).owner()}"
        print(f"ranks {ranks} ended and the lock was free {time.time() - t:.2f} s after the launcher was killed")
    finally:
        for pid in [job.pid, *_children(job.pid), *ranks]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
