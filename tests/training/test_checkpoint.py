"""Checkpoints verify themselves: a manifest of sizes and hashes, corrupt ones skipped on resume, leftovers removed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genforge.rundir import EMA_WEIGHTS, MANIFEST, STATE, WEIGHTS
from genforge.training import checkpoint as ckpt_mod
from genforge.training.checkpoint import (list_checkpoints, load_state, newest_valid_checkpoint,
                                          remove_stale_temporaries, verify_checkpoint, write_manifest)
from genforge.training.trainer import TrainingError
from tests.training.test_trainer import make


def weights(folder: Path) -> dict[str, torch.Tensor]:
    out = {f"model/{k}": v for k, v in load_file(folder / WEIGHTS).items()}
    if (folder / EMA_WEIGHTS).is_file():
        out.update({f"ema/{k}": v for k, v in load_file(folder / EMA_WEIGHTS).items()})
    return out


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def run(tmp_path) -> Path:
    """A finished toy run with checkpoints at steps 2, 4, …, 10 (EMA on)."""
    (tmp_path / "run").mkdir()
    trainer, _ = make(tmp_path / "run", checkpoint_every=2, keep_checkpoints=10)
    trainer.fit()
    return tmp_path / "run"


def step_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:08d}"


def flip(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def evil_state(path: Path) -> None:
    """A state.pt that only a full unpickler would load (it would call print)."""
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"step": 1, "x": Evil()}, path)


# ---------------------------------------------------------------------------- manifest
def test_manifest_lists_every_file_with_size_and_sha256(run):
    folder = step_dir(run, 10)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["step"] == 10 and manifest["format_version"] == ckpt_mod.FORMAT_VERSION
    assert set(manifest["files"]) == {WEIGHTS, EMA_WEIGHTS, STATE}
    assert sorted(p.name for p in folder.iterdir()) == sorted([*manifest["files"], MANIFEST])
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert verify_checkpoint(folder) is None
    assert load_state(folder)["step"] == 10  # state.pt still loads with weights_only=True


# ---------------------------------------------------------------------------- verification
def _truncate_state(f: Path) -> str:
    size = (f / STATE).stat().st_size
    with open(f / STATE, "r+b") as fh:
        fh.truncate(size - 7)
    return f"state.pt: {size - 7} bytes, manifest says {size}"


def _garbage_manifest(f: Path) -> str:
    (f / MANIFEST).write_text("{not json")
    return "manifest.json unreadable"


def _grown_weights(f: Path) -> str:
    size = (f / WEIGHTS).stat().st_size
    with open(f / WEIGHTS, "ab") as fh:
        fh.write(b"\0")
    return f"model.safetensors: {size + 1} bytes, manifest says {size}"


CORRUPTIONS = {  # kind -> corrupt the checkpoint folder and return how the reason starts
    "truncated state": _truncate_state,
    "flipped weights": lambda f: flip(f / WEIGHTS) or "model.safetensors: sha256 mismatch",
    "flipped state": lambda f: flip(f / STATE, 40) or "state.pt: sha256 mismatch",
    "deleted ema": lambda f: (f / EMA_WEIGHTS).unlink() or "ema.safetensors missing",
    "deleted state": lambda f: (f / STATE).unlink() or "state.pt missing",
    "deleted manifest": lambda f: (f / MANIFEST).unlink() or "manifest.json missing",
    "garbage manifest": _garbage_manifest,
    "grown weights": _grown_weights,
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_each_corruption_is_detected(run, kind):
    folder = step_dir(run, 10)
    expected = CORRUPTIONS[kind](folder)
    reason = verify_checkpoint(folder)
    assert reason is not None and reason.startswith(expected), reason
    assert verify_checkpoint(step_dir(run, 8)) is None  # the others are untouched
    found, skipped = newest_valid_checkpoint(run)
    assert found == step_dir(run, 8) and skipped == [(folder, reason)]


def test_checkpoint_without_manifest_from_before_manifests_is_accepted_when_it_loads(run):
    folder = step_dir(run, 10)
    state = load_state(folder)
    del state["checkpoint_format"]  # what older versions wrote: no marker, no manifest
    torch.save(state, folder / STATE)
    (folder / MANIFEST).unlink()
    assert verify_checkpoint(folder) is None
    (folder / WEIGHTS).write_bytes(b"")
    assert verify_checkpoint(folder).startswith("model.safetensors does not load")


# ---------------------------------------------------------------------------- resume
def test_resume_skips_corrupt_checkpoints_and_matches_an_uninterrupted_run(tmp_path, run, capsys):
    reference = weights(step_dir(run, 10))
    truncated = _truncate_state(step_dir(run, 10))
    flip(step_dir(run, 8) / WEIGHTS)
    capsys.readouterr()
    trainer, _ = make(run, checkpoint_every=2, keep_checkpoints=10)
    result = trainer.fit(resume=True)
    err = capsys.readouterr().err
    assert f"skipped checkpoints/step-00000010: {truncated}\n" in err
    assert "skipped checkpoints/step-00000008: model.safetensors: sha256 mismatch\n" in err
    assert err.count("skipped ") == 2
    assert f"resumed from {step_dir(run, 6)} (step 6)" in err
    assert result.step == 10
    assert same(weights(step_dir(run, 10)), reference)  # bit-identical to the uninterrupted run
    assert all(verify_checkpoint(p) is None for _, p in list_checkpoints(run))


def test_a_checkpoint_that_verifies_but_does_not_load_is_skipped(run, capsys):
    folder = step_dir(run, 10)
    evil_state(folder / STATE)
    (folder / MANIFEST).unlink()
    write_manifest(folder, 10)  # the manifest agrees with the bytes: only loading can tell
    assert verify_checkpoint(folder) is None
    trainer, _ = make(run, checkpoint_every=2, keep_checkpoints=10)
    found, skipped = newest_valid_checkpoint(run, load=trainer._restore)
    assert found == step_dir(run, 8) and trainer.step == 8
    [(folder_, reason)] = skipped
    assert folder_ == folder and reason.startswith("state.pt does not load (")
    assert "weights_only" not in reason
    assert "pwned" not in capsys.readouterr().out  # nothing was executed


def test_no_valid_checkpoint_is_a_training_error_with_every_reason(run):
    evil_state(step_dir(run, 10) / STATE)
    for step in (2, 4, 6, 8):
        flip(step_dir(run, step) / STATE, 40)
    trainer, _ = make(run, checkpoint_every=2, keep_checkpoints=10)
    with pytest.raises(TrainingError) as info:
        trainer.fit(resume=True)
    msg = str(info.value)
    assert "none of the 5 checkpoint(s)" in msg and "verifies" in msg
    assert "step-00000010: state.pt: " in msg and "step-00000002: state.pt: sha256 mismatch" in msg
    assert "weights_only" not in msg and "\n" not in msg


def test_no_checkpoint_at_all(tmp_path):
    trainer, _ = make(tmp_path)
    with pytest.raises(TrainingError, match="no checkpoint in .*nothing to resume"):
        trainer.fit(resume=True)


def test_pruning_keeps_checkpoints_of_the_resumed_timeline(run):
    """Skipped (newer, corrupt) checkpoints never push the valid ones out; they are replaced when reached."""
    for step in (10, 8, 6):
        flip(step_dir(run, step) / WEIGHTS)
    trainer, _ = make(run, checkpoint_every=2, keep_checkpoints=2, max_steps=10)
    trainer.fit(resume=True)
    assert [s for s, _ in list_checkpoints(run)] == [8, 10]
    assert all(verify_checkpoint(p) is None for _, p in list_checkpoints(run))


def test_same_step_saved_again_replaces_the_old_one(run):
    trainer, _ = make(run, checkpoint_every=2, keep_checkpoints=10)
    trainer.fit(resume=True)  # resumes at 10 = max_steps and saves step 10 again
    assert verify_checkpoint(step_dir(run, 10)) is None
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------------- full disk
@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 662"),
    RuntimeError("PytorchStreamWriter failed writing file data/3: file write failed"),
    OSError(28, "No space left on device")])
def test_disk_full_while_writing_is_one_line_and_leaves_earlier_checkpoints(run, monkeypatch, error):
    trainer, _ = make(run, checkpoint_every=2, keep_checkpoints=10, max_steps=12)

    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(ckpt_mod.torch, "save", full)
    with pytest.raises(TrainingError) as info:
        trainer.fit(resume=True)
    msg = str(info.value)
    assert msg.startswith(f"no space left on device while writing checkpoint {step_dir(run, 12)} (")
    assert msg.endswith(" bytes free); earlier checkpoints are intact") and "\n" not in msg
    assert [s for s, _ in list_checkpoints(run)] == [2, 4, 6, 8, 10]
    assert all(verify_checkpoint(p) is None for _, p in list_checkpoints(run))
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # temporary removed


def test_other_write_errors_are_not_called_a_full_disk(run, monkeypatch):
    trainer, _ = make(run, max_steps=12)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ckpt_mod.torch, "save", denied)
    with pytest.raises(PermissionError):
        trainer.fit(resume=True)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------------- leftovers
def test_remove_stale_temporaries_removes_planted_leftovers_and_nothing_else(run):
    (run / "best").mkdir()
    (run / "best" / WEIGHTS).write_bytes(b"keep")
    leftovers = [run / "checkpoints" / ".step-00000012.k2j4h5g6",  # killed save_checkpoint
                 run / "checkpoints" / ".step-00000010.replaced-4242",  # killed while replacing a same-step one
                 run / ".model.safetensors.abc_12xy.tmp", run / ".config.yaml.q1w2e3r4.tmp",
                 run / "best" / ".model.safetensors.zz99yy88.tmp", run / "samples" / ".step-00000010.png.a1b2c3d4.tmp"]
    for p in leftovers:
        if p.parent.name == "checkpoints":
            p.mkdir()
            (p / WEIGHTS).write_bytes(b"half")
        else:
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(b"half")
    keep = [run / ".lock", run / "notes.tmp", run / ".hidden", run / "tb" / ".x.abcdefgh.tmp",
            run / "checkpoints" / "notes.txt", run / "best" / "best.json"]
    (run / "tb").mkdir(exist_ok=True)
    for p in keep:
        p.write_text("mine")
    before = {p for p in run.rglob("*") if not any(p.is_relative_to(x) for x in leftovers)}

    removed = remove_stale_temporaries(run)
    assert removed == sorted(leftovers)
    assert not any(p.exists() for p in leftovers)
    assert {p for p in run.rglob("*")} == before
    assert remove_stale_temporaries(run) == []
    assert remove_stale_temporaries(run / "does-not-exist") == []
    found, skipped = newest_valid_checkpoint(run)
    assert found == step_dir(run, 10) and skipped == []
    shutil.rmtree(run / "checkpoints")
    assert remove_stale_temporaries(run) == []


def test_pruning_removes_only_folders_that_hold_a_checkpoint_and_nothing_else(run):
    """A checkpoint folder another command or a person wrote into is never removed by its name (issue 24, 2)."""
    (step_dir(run, 2) / "synthetic").mkdir()
    (step_dir(run, 2) / "synthetic" / "0000000.png").write_bytes(b"png")
    (step_dir(run, 4) / "notes.txt").write_text("mine")
    (step_dir(run, 6) / STATE).write_bytes(b"truncated")  # does not verify: not pruned as a checkpoint either
    trainer, _ = make(run, checkpoint_every=2, keep_checkpoints=1, max_steps=12)
    trainer.fit(resume=True)
    assert (step_dir(run, 2) / "synthetic" / "0000000.png").read_bytes() == b"png"
    assert (step_dir(run, 4) / "notes.txt").read_text() == "mine"
    assert step_dir(run, 6).is_dir() and not step_dir(run, 8).exists() and not step_dir(run, 10).exists()
    assert ckpt_mod.prunable(step_dir(run, 12)) and not ckpt_mod.prunable(step_dir(run, 4))


def test_training_start_up_keeps_the_temporary_of_a_command_still_writing(tmp_path):
    """A train --resume starting while an eval writes into the run removes only dead writers' temporaries."""
    import os
    import subprocess
    import sys

    from genforge.training.checkpoint import remove_stale_temporaries

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        alive = tmp_path / f".eval.json.{live.pid}_abc.tmp"
        dead = tmp_path / ".eval.md.999999999_abc.tmp"
        legacy = tmp_path / ".model.safetensors.x1y2.tmp"  # the earlier naming: no pid, removed as before
        for p in (alive, dead, legacy):
            p.write_text("partial")
        removed = remove_stale_temporaries(tmp_path)
        assert alive.exists() and not dead.exists() and not legacy.exists()
        assert set(removed) == {dead, legacy} and os.getpid() != live.pid
    finally:
        live.kill()
        live.wait()
