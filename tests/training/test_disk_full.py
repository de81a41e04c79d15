"""A full disk while checkpointing: one clear line, earlier checkpoints intact, and resume works once space is back.

Runs on a small tmpfs mounted for the test (needs root and permission to mount;
skipped otherwise). A filler file leaves room for a few checkpoints only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from genforge.config import TrainConfig
from genforge.models.base import GenerativeModel, ModelConfig
from genforge.training.checkpoint import list_checkpoints, newest_valid_checkpoint, verify_checkpoint
from genforge.training.trainer import Trainer, TrainingError
from tests.training.test_trainer import Stream

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
MiB = 1 << 20


@pytest.fixture
def small_disk(tmp_path):
    """(mount point of an 8 MiB tmpfs, filler file taking part of it); unmounted afterwards."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path, leave: int) -> Path:
    """Write a filler file so that about ``leave`` bytes stay free."""
    filler = mnt / "filler.bin"
    size = shutil.disk_usage(mnt).free - leave
    with open(filler, "wb") as f:
        f.write(b"\0" * size)
    return filler


@dataclass(kw_only=True)
class BigConfig(ModelConfig):
    family: str = "big-toy"
    size: int = 65536  # 256 KiB of weights: a checkpoint (weights, EMA, Adam moments) is about 1 MiB


class Big(GenerativeModel):
    config_class = BigConfig
    family = "big-toy"

    def __init__(self, config):
        super().__init__(config)
        self.w = nn.Parameter(torch.linspace(-1, 1, config.size))

    def losses(self, batch, *, groups=None):
        return {"loss": ((self.w - batch["x"].float().mean()) ** 2).mean()}


def trainer(run_dir: Path, **train) -> Trainer:
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(**{"max_steps": 12, "batch_size": 4, "lr": 0.01, "log_every": 1000, "progress": False,
                         "checkpoint_every": 1, "keep_checkpoints": 100, "sample_every": 0, "num_threads": 1,
                         **train})
    torch.manual_seed(0)
    return Trainer(Big(BigConfig()), cfg, Stream(), run_dir)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    step, folder = list_checkpoints(run_dir)[-1]
    return {f"{step}/{name}/{k}": v for name in ("model.safetensors", "ema.safetensors")
            for k, v in load_file(folder / name).items()}


def test_disk_full_in_process_then_resume_matches_an_uninterrupted_run(small_disk, tmp_path):
    reference = tmp_path / "reference"
    trainer(reference, keep_checkpoints=2).fit()

    filler = fill(small_disk, int(4.5 * MiB))  # room for 4 checkpoints
    run = small_disk / "run"
    with pytest.raises(TrainingError) as info:
        trainer(run).fit()
    msg = str(info.value)
    steps = [s for s, _ in list_checkpoints(run)]
    assert 1 <= len(steps) < 12 and steps == list(range(1, len(steps) + 1))
    failed = run / "checkpoints" / f"step-{steps[-1] + 1:08d}"
    assert msg.startswith(f"no space left on device while writing checkpoint {failed} (")
    assert msg.endswith(" bytes free); earlier checkpoints are intact") and "\n" not in msg
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # the temporary is gone
    assert all(verify_checkpoint(p) is None for _, p in list_checkpoints(run))
    assert newest_valid_checkpoint(run) == (run / "checkpoints" / f"step-{steps[-1]:08d}", [])

    filler.unlink()
    result = trainer(run, keep_checkpoints=2).fit(resume=True)
    assert result.step == 12
    assert final_weights(run).keys() == final_weights(reference).keys()
    assert all(torch.equal(a, b) for a, b in zip(final_weights(run).values(), final_weights(reference).values()))


def test_disk_full_through_the_cli_then_resume(small_disk, tmp_path):
    env = dict(os.environ, GENFORGE_CACHE=str(tmp_path / "cache"))
    run = small_disk / "run"
    args = ["--no-progress", "--set", "train.max_steps=40", "--set", "train.checkpoint_every=1",
            "--set", "train.keep_checkpoints=1000", "--set", "train.sample_every=0", "--set", "train.num_threads=1"]
    filler = fill(small_disk, 450 * 1024)  # a few tiny-gan checkpoints (~115 KB each)
    proc = subprocess.run([sys.executable, "-m", "genforge.cli", "train", "tiny-gan", "--out", str(run), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and len(lines) >= 1
    assert lines[-1].startswith("genforge train: error: no space left on device while writing "), lines[-1]
    assert str(run) in lines[-1] and "intact" in lines[-1]
    done = list_checkpoints(run)
    assert done and all(verify_checkpoint(p) is None for _, p in done)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]

    filler.unlink()
    proc = subprocess.run([sys.executable, "-m", "genforge.cli", "train", "--out", str(run), "--resume", *args,
                           "--set", "train.keep_checkpoints=2"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {done[-1][1]} (step {done[-1][0]})" in proc.stderr
    assert [s for s, _ in list_checkpoints(run)][-1] == 40
