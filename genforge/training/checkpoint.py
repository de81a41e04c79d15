"""Training checkpoints: written atomically, the last K kept, loaded without pickle.

A checkpoint is a folder ``checkpoints/step-00001234/`` holding
the raw weights, the EMA weights (when EMA is on) and
``state.pt`` (optimizers, scalers, RNG and data-order state, counters; plain
tensors and containers, loaded with ``weights_only=True``). It is built in a
temporary folder and renamed into place, so a crash mid-write never leaves a
half checkpoint where a resume would find it, and older ones are pruned only
after the new one is complete.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_model
from torch import nn

from genforge.rundir import CHECKPOINTS_DIR as CHECKPOINT_DIR
from genforge.rundir import EMA_WEIGHTS, STATE, WEIGHTS

_NAME = re.compile(r"^step-(\d{8})$")


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), Python's ``random`` and NumPy's global RNG."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop may touch, as tensors and plain values."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first, as ``(step, folder)``."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and (p / STATE).is_file() and (p / WEIGHTS).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, ema_model: nn.Module | None,
                    state: dict[str, Any], keep: int) -> Path:
    """Write checkpoint ``step`` atomically, then keep only the newest ``keep``."""
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        save_model(model, str(tmp / WEIGHTS))
        if ema_model is not None:
            save_model(ema_model, str(tmp / EMA_WEIGHTS))
        torch.save(state, tmp / STATE)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # same step saved twice (e.g. a resumed run ending where it began)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The ``state.pt`` of a checkpoint, loaded safely (no arbitrary pickle)."""
    return torch.load(checkpoint / STATE, map_location="cpu", weights_only=True)
