"""Training checkpoints: written atomically, verified before use, the last K kept, loaded without pickle.

A checkpoint is a folder ``checkpoints/step-00001234/`` holding
the raw weights, the EMA weights (when EMA is on), ``state.pt`` (optimizers,
scalers, RNG and data-order state, counters; plain tensors and containers,
loaded with ``weights_only=True``) and, written last, ``manifest.json``: the
size and sha256 of every other file, the step and the format version. It is
built in a temporary folder (``checkpoints/.step-00001234.XXXX``) and renamed
into place, so a crash mid-write never leaves a half checkpoint where a resume
would find it, and older ones are pruned only after the new one is complete.

A resume takes the newest checkpoint that verifies (:func:`newest_valid_checkpoint`):
one whose files were truncated, changed or deleted after it was written is
skipped with the reason. A full disk while writing is reported in one line
(:class:`TrainingError`) and leaves the earlier checkpoints as they were.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_model
from torch import nn

from genforge.io import pid_alive, temporary_owner
from genforge.rundir import BEST_DIR, EMA_WEIGHTS, MANIFEST, SAMPLES_DIR, STATE, WEIGHTS
from genforge.rundir import CHECKPOINTS_DIR as CHECKPOINT_DIR

FORMAT_VERSION = 1  # of the checkpoint layout; recorded in manifest.json and state.pt
_FORMAT_KEY = "checkpoint_format"  # in state.pt: present in every checkpoint that was written with a manifest

_NAME = re.compile(r"^step-(\d{8})$")
_TEMP_CHECKPOINT = re.compile(r"^\.step-\d{8}\..+")  # save_checkpoint's temporary (and set-aside) folders
_TEMP_FILE = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")  # genforge.io.atomic_path: .<name>.<random>.tmp
_DISK_FULL_TEXT = ("unexpected pos", "file write failed", "No space left on device", "StorageFull", "os error 28")


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, nothing to resume, a full disk, …)."""


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


# ---------------------------------------------------------------------------- listing
def _step_folders(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Every ``step-*`` folder of a run, complete or not, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Checkpoints of a run that hold weights and a state, oldest first, as ``(step, folder)``.

    Their contents are not verified here; see :func:`newest_valid_checkpoint`.
    """
    return [(s, p) for s, p in _step_folders(run_dir) if (p / STATE).is_file() and (p / WEIGHTS).is_file()]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint folder (unverified), or None: for callers that ask whether there is one."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


# ---------------------------------------------------------------------------- verification
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe_error(e: BaseException) -> str:
    """One short line for an exception raised while reading a file (never torch's ``weights_only`` advice)."""
    text = str(e).strip()
    if type(e).__name__ == "UnpicklingError" or "weights_only" in text or "Weights only load failed" in text:
        return "holds something other than plain tensors and containers (refused by the weights-only loader)"
    if not text:
        return "the file ends early" if isinstance(e, EOFError) else type(e).__name__
    line = text.splitlines()[0].strip()
    if len(line) > 100 and ". " in line:  # torch appends paragraphs of advice to the first sentence
        line = line[:line.index(". ") + 1]
    return line if len(line) <= 200 else line[:197] + "..."


def write_manifest(folder: Path, step: int) -> Path:
    """Write ``folder/manifest.json`` listing every other file's size and sha256; fsynced."""
    files = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name != MANIFEST:
            files[f.name] = {"size": f.stat().st_size, "sha256": _sha256(f)}
    manifest = {"format_version": FORMAT_VERSION, "step": step, "files": files}
    path = folder / MANIFEST
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(manifest, indent=1) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return path


def _read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """The ``files`` of a manifest; ValueError when it is not one."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{MANIFEST} unreadable ({describe_error(e)})") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        raise ValueError(f"{MANIFEST} has no file list")
    for name, entry in files.items():
        if not name or "/" in name or "\\" in name or name in (".", "..") or not isinstance(entry, dict) \
                or not isinstance(entry.get("size"), int) or not isinstance(entry.get("sha256"), str):
            raise ValueError(f"{MANIFEST} has an invalid entry {name!r}")
    m = _NAME.match(folder.name)
    if m and data.get("step") != int(m.group(1)):
        raise ValueError(f"{MANIFEST} says step {data.get('step')!r}, the folder is {folder.name}")
    return files


def _verify_legacy(folder: Path) -> str | None:
    """A checkpoint without a manifest: accepted when it predates manifests and its files load."""
    for name in (WEIGHTS, STATE):
        if not (folder / name).is_file():
            return f"{name} missing"
    try:
        state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
    except Exception as e:
        return f"{STATE} does not load ({describe_error(e)})"
    if isinstance(state, dict) and _FORMAT_KEY in state:
        return f"{MANIFEST} missing"  # written with a manifest that is gone: its files cannot be checked
    for name in (WEIGHTS, EMA_WEIGHTS):
        if (folder / name).is_file():
            try:
                with safe_open(str(folder / name), framework="pt") as f:
                    for key in f.keys():
                        f.get_tensor(key)
            except Exception as e:
                return f"{name} does not load ({describe_error(e)})"
    return None


def verify_checkpoint(path: str | Path) -> str | None:
    """None when the checkpoint at ``path`` is intact, otherwise a short reason why not.

    Intact means ``manifest.json`` exists and every file it lists exists with
    the recorded size and sha256 (it must list the weights and ``state.pt``).
    Reasons read e.g. ``manifest.json missing``, ``state.pt: 1234 bytes,
    manifest says 5678``, ``model.safetensors: sha256 mismatch``,
    ``ema.safetensors missing``.

    Checkpoints written before manifests existed (no ``manifest.json`` and no
    format marker in ``state.pt``) are accepted when their files load: the
    weights as safetensors, ``state.pt`` with ``weights_only=True``. A
    checkpoint written with a manifest that has since been deleted is refused
    (``manifest.json missing``): nothing is left to check its bytes against.
    """
    folder = Path(path)
    if not folder.is_dir():
        return "no such folder"
    if not (folder / MANIFEST).is_file():
        return _verify_legacy(folder)
    try:
        files = _read_manifest(folder)
    except ValueError as e:
        return str(e)
    for name in (WEIGHTS, STATE):
        if name not in files:
            return f"{MANIFEST} does not list {name}"
    for name, entry in files.items():  # cheap checks first, then the hashes
        f = folder / name
        if not f.is_file():
            return f"{name} missing"
        size = f.stat().st_size
        if size != entry["size"]:
            return f"{name}: {size} bytes, manifest says {entry['size']}"
    for name, entry in files.items():
        try:
            digest = _sha256(folder / name)
        except OSError as e:
            return f"{name} unreadable ({describe_error(e)})"
        if digest != entry["sha256"]:
            return f"{name}: sha256 mismatch"
    return None


def newest_valid_checkpoint(run_dir: str | Path, *, load: Callable[[Path], Any] | None = None
                            ) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint that verifies, and the newer ones skipped with their reasons (newest first).

    ``load``, when given, is called on each checkpoint that verifies; an
    exception from it (e.g. ``state.pt`` does not fit the model) counts as
    "does not verify" and the search goes on with the next older checkpoint.
    Returns ``(None, skipped)`` when none is left.
    """
    skipped: list[tuple[Path, str]] = []
    for _, folder in reversed(_step_folders(run_dir)):
        reason = verify_checkpoint(folder)
        if reason is None and load is not None:
            try:
                load(folder)
            except Exception as e:
                reason = describe_error(e)
        if reason is None:
            return folder, skipped
        skipped.append((folder, reason))
    return None, skipped


# ---------------------------------------------------------------------------- writing
def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` (or what caused it) says the disk is full: ENOSPC, or torch/safetensors' write errors."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(e, Exception) and any(t in str(e) for t in _DISK_FULL_TEXT):
            return True
        e, seen = (e.__cause__ or e.__context__), seen + 1
    return False


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system holding ``path`` (-1 when it cannot be asked)."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return -1


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, ema_model: nn.Module | None,
                    state: dict[str, Any], keep: int) -> Path:
    """Write checkpoint ``step`` atomically (manifest last), then keep only the newest ``keep``.

    Raises:
        TrainingError: the disk is full; the temporary folder is removed and the
            earlier checkpoints are untouched.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    final = root / f"step-{step:08d}"
    tmp: Path | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
        save_model(model, str(tmp / WEIGHTS))
        if ema_model is not None:
            save_model(ema_model, str(tmp / EMA_WEIGHTS))
        torch.save({**state, _FORMAT_KEY: FORMAT_VERSION}, tmp / STATE)
        for f in tmp.iterdir():
            _fsync(f)
        write_manifest(tmp, step)  # last: a folder with a manifest was complete when it was listed
        _fsync(tmp)
        if final.exists():  # same step saved twice (e.g. a resumed run ending where it began)
            aside = root / f".{final.name}.replaced-{os.getpid()}"
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(final, aside)
            os.replace(tmp, final)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, final)
        tmp = None
        _fsync(root)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(e):
            raise TrainingError(f"no space left on device while writing checkpoint {final} "
                                f"({free_bytes(root)} bytes free); earlier checkpoints are intact") from None
        raise
    # Only checkpoints up to this step count: newer ones exist only when a resume skipped them (they did
    # not verify), and are replaced when training reaches their step again.
    older = [p for s, p in _step_folders(run_dir) if s <= step and (p == final or prunable(p))]
    for old in older[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def prunable(folder: Path) -> bool:
    """Whether ``folder`` holds a checkpoint and nothing else, so pruning may remove it: plain files only, each
    listed in its readable manifest with the recorded size (or, before manifests, only a checkpoint's own file
    names). A folder holding anything another command or a person put there is never removed by name."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    entries = list(folder.iterdir())
    if any(e.is_symlink() or not e.is_file() for e in entries):
        return False
    names = {e.name for e in entries}
    if MANIFEST not in names:
        return names <= {WEIGHTS, EMA_WEIGHTS, STATE} and {WEIGHTS, STATE} <= names
    try:
        files = _read_manifest(folder)
    except ValueError:
        return False
    return names == {*files, MANIFEST} and all((folder / n).stat().st_size == e["size"] for n, e in files.items())


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The ``state.pt`` of a checkpoint, loaded safely (no arbitrary pickle)."""
    return torch.load(checkpoint / STATE, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------- clean-up
def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Remove what killed writes left in a run directory; returns the removed paths.

    That is: temporary checkpoint folders in ``checkpoints/`` (``.step-00001234.*``)
    and :func:`genforge.io.atomic_path` temporaries (``.<name>.<random>.tmp``
    files) directly in the run directory, ``best/`` and ``samples/``. Nothing
    else is touched. Only call it while no other process writes into the run.
    """
    run = Path(run_dir)
    removed: list[Path] = []
    checkpoints = run / CHECKPOINT_DIR
    if checkpoints.is_dir():
        for p in checkpoints.iterdir():
            if _TEMP_CHECKPOINT.match(p.name) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    for folder in (run, run / BEST_DIR, run / SAMPLES_DIR):
        if folder.is_dir() and not folder.is_symlink():
            for p in folder.iterdir():
                owner = temporary_owner(p.name)  # another command (eval …) still writing keeps its temporary
                if owner is not None and owner != os.getpid() and pid_alive(owner):
                    continue
                if _TEMP_FILE.match(p.name) and p.is_file() and not p.is_symlink():
                    p.unlink(missing_ok=True)
                    removed.append(p)
    return sorted(removed)
