"""Two writing commands at once on one run or one output: both keep their results, or one refuses with one line
and the other's output stays whole (issue 24, concurrency). Two real ``genforge`` commands run in threads and
meet at a barrier at the moment of publishing (``genforge.io.publish``), so both have passed their start-up
checks (the output was absent for both) before either publishes: the outcome does not depend on timing."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

import genforge.evaluation.leaderboard.write as board_write
import genforge.io as gio
from genforge.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    from genforge.models import build, config_class
    from genforge.training.run import train

    root = tmp_path_factory.mktemp("concurrent")
    fast = ["train.max_steps=2", "train.checkpoint_every=2", "train.sample_every=2", "train.num_threads=1"]
    train("tiny-gan", overrides=fast, out=root / "gan", progress=False)
    sr = build(config_class("superres")(family="superres", channels=1, image_size=8, factors=[2], width=8))
    sr.save_pretrained(root / "sr", run_config={"task": "image"})
    (root / "images").mkdir()
    for i in range(2):
        Image.fromarray((torch.rand(8, 8) * 255).byte().numpy(), mode="L").save(root / "images" / f"im{i}.png")
    (root / "lows").mkdir()
    for name in ("low.png", "lows/a.png", "lows/b.png"):
        Image.fromarray((torch.rand(4, 4) * 255).byte().numpy(), mode="L").save(root / name)
    return {"root": root, "gan": root / "gan", "sr": root / "sr", "images": root / "images", "low": root / "low.png",
            "lows": root / "lows"}


def _meet_at_publish(monkeypatch) -> None:
    """Make each thread's first publish under a final name wait until the other thread reaches its own."""
    barrier, seen = threading.Barrier(2, timeout=30), threading.local()
    real = gio.publish

    def publish(tmp, target):
        final = not any(part.endswith(".tmp") for part in Path(target).parts)  # not a file of a staging folder
        if final and not getattr(seen, "met", False):
            seen.met = True
            barrier.wait()
        real(tmp, target)

    monkeypatch.setattr(gio, "publish", publish)
    monkeypatch.setattr(board_write, "publish", publish)


def _twice(argv: list[str], capsys, monkeypatch) -> tuple[list[int], list[str]]:
    """Run ``genforge ARGV`` in two threads at once; their exit codes and the lines both wrote on stderr."""
    monkeypatch.setenv("GENFORGE_DEBUG", "")
    _meet_at_publish(monkeypatch)
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(main([str(a) for a in argv]))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    return sorted(codes), err


def _digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def _whole_png(path: Path) -> bool:
    with Image.open(path) as im:
        im.load()
    return True


def _one_refused(codes, err, out: Path) -> None:
    assert codes[0] == 0 and codes[1] in (1, 2), (codes, err)
    assert len(err) == 1 and "written by another process" in err[0] and "Traceback" not in err[0], err
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("command", ["sample", "interpolate", "upscale", "inpaint"])
def test_two_writers_of_one_new_file_one_refuses_and_the_other_is_whole(command, world, tmp_path, capsys,
                                                                         monkeypatch):
    out = tmp_path / "same.png"
    argv = {"sample": ["sample", world["gan"], "--n", "4"],
            "interpolate": ["interpolate", world["gan"], "--steps", "3"],
            "upscale": ["upscale", world["sr"], "--image", world["low"], "--steps", "2"],
            "inpaint": ["inpaint", world["gan"], "--image", world["images"] / "im0.png", "--mask", "center",
                        "--steps", "2"]}[command]
    codes, err = _twice([*argv, "-o", out], capsys, monkeypatch)
    _one_refused(codes, err, out)
    assert _whole_png(out)


def test_two_samples_with_overwrite_both_finish_and_the_file_is_whole(world, tmp_path, capsys, monkeypatch):
    out = tmp_path / "same.png"
    out.write_bytes(b"earlier")
    codes, err = _twice(["sample", world["gan"], "--n", "4", "-o", out, "--overwrite"], capsys, monkeypatch)
    assert codes == [0, 0] and err == []
    assert _whole_png(out) and [p.name for p in tmp_path.iterdir()] == ["same.png"]


@pytest.mark.parametrize("case", ["export-onnx", "export-hf", "synth", "synth-npz", "inpaint-folder",
                                  "upscale-folder"])
def test_two_writers_of_one_new_folder_one_refuses_and_the_other_is_whole(case, world, tmp_path, capsys,
                                                                           monkeypatch):
    out = tmp_path / ("same.npz" if case == "synth-npz" else "same")
    argv = {"export-onnx": ["export", world["gan"], "--format", "onnx", "--out", out],
            "export-hf": ["export", world["gan"], "--format", "hf", "--out", out],
            "synth": ["synth", world["gan"], "--n", "6", "--out", out],
            "synth-npz": ["synth", world["gan"], "--n", "6", "--out", out],
            "inpaint-folder": ["inpaint", world["gan"], "--image", world["images"], "--mask", "center",
                               "--steps", "2", "-o", out],
            "upscale-folder": ["upscale", world["sr"], "--image", world["lows"], "--steps", "2", "-o", out]}[case]
    if case == "export-onnx":  # torch.onnx.export keeps global state: one export at a time, publishing at once
        import genforge.export.onnx as onnx

        lock, real = threading.Lock(), onnx.export_onnx

        def one_at_a_time(*a, **k):
            with lock:
                return real(*a, **k)

        monkeypatch.setattr(onnx, "export_onnx", one_at_a_time)
    codes, err = _twice(argv, capsys, monkeypatch)
    _one_refused(codes, err, out)
    if out.is_dir():
        files = sorted(p.name for p in out.rglob("*") if p.is_file())
        assert files and not [f for f in files if f.endswith(".tmp")], files
    if case == "inpaint-folder":
        assert sorted(p.name for p in out.iterdir()) == ["im0.png", "im1.png"] and all(map(_whole_png,
                                                                                           out.iterdir()))


def test_two_exports_of_one_run_into_its_default_folder(world, tmp_path, capsys, monkeypatch):
    import shutil

    run = tmp_path / "gan"
    shutil.copytree(world["gan"], run)
    before = _digest(run / "model.safetensors")
    codes, err = _twice(["export", run, "--format", "hf"], capsys, monkeypatch)
    _one_refused(codes, err, run / "export-hf")
    assert (run / "export-hf" / "model.safetensors").is_file() and _digest(run / "model.safetensors") == before


def test_two_compares_into_one_folder(world, tmp_path, capsys, monkeypatch):
    out = tmp_path / "board"
    codes, err = _twice(["compare", world["gan"], "--out", out], capsys, monkeypatch)
    assert codes[0] == 0 and codes[1] in (1, 2) and len(err) == 1 and "written by another process" in err[0]
    names = sorted(p.name for p in out.iterdir())
    assert "leaderboard.md" in names and "leaderboard.html" in names and not [n for n in names if ".tmp" in n]
    codes, err = _twice(["compare", world["gan"], "--out", out, "--overwrite"], capsys, monkeypatch)
    assert codes == [0, 0] and err == []
    assert (out / "leaderboard.md").is_file() and (out / "leaderboard.html").is_file()
