"""What each command may write inside a run (``genforge.rundir.OWNED``), refused locations, and outputs that
appear whole or not at all: kills simulated by raising inside the writer, leftovers of a dead process cleaned at
the next start, and two evals of one run at once both keeping their results (issue 24, findings 2 and 3)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from genforge.evaluation.leaderboard.write import COMPLETE, HTML_NAME, MD_NAME, finish_interrupted
from genforge.evaluation.protocol import Protocol, protocol_id
from genforge.evaluation.record import EVAL_FORMAT, commit_record, format_markdown, read_eval, repair_eval
from genforge.io import atomic_dir
from genforge.rundir import RunDir, RunDirError, check_location, check_output


def dead_pid() -> int:
    """The pid of a process that has exited (what a kill -9 leaves behind)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def run(tmp_path) -> Path:
    """A minimal run directory: config, weights, a checkpoint folder, samples of training."""
    r = tmp_path / "run"
    (r / "checkpoints" / "step-00000002").mkdir(parents=True)
    (r / "samples").mkdir()
    (r / "config.yaml").write_text("task: image\nmodel:\n  family: gan\n")
    (r / "model.safetensors").write_bytes(b"w")
    (r / "samples" / "step-00000002.png").write_bytes(b"history")
    return r


@pytest.mark.parametrize("command,rel,ok", [
    ("sample", "samples/sample-seed0.png", True), ("sample", "samples/sample-a.txt", True),
    ("sample", "samples/step-00000002.png", False), ("sample", "samples.png", False),
    ("sample", "model.safetensors", False), ("sample", "notes.png", False),
    ("inpaint", "samples/inpaint-out/a.png", True), ("inpaint", "samples/sample-x.png", False),
    ("upscale", "samples/upscale-a.png", True), ("interpolate", "samples/interpolate-a.png", True),
    ("eval", "eval.json", True), ("eval", "eval.md", True), ("eval", "config.yaml", False),
    ("export", "export-onnx", True), ("export", "export-hf/parents/base", True),
    ("export", "checkpoints/step-00000002", False), ("synth", "checkpoints/step-00000002/data", False),
    ("synth", "synthetic", False), ("compare", ".", False), ("compare", "leaderboard", False)])
def test_each_command_writes_inside_a_run_only_what_it_owns(run, command, rel, ok):
    path = run / rel
    if ok:
        assert check_location(path, command=command) == path
    else:
        with pytest.raises(RunDirError, match=f"inside the run .* where {command} writes (only|nothing)"):
            check_location(path, command=command)


def test_sample_overwrite_cannot_replace_training_history(run):
    with pytest.raises(RunDirError, match="inside the run"):
        check_output(run / "samples" / "step-00000002.png", overwrite=True)
    assert (run / "samples" / "step-00000002.png").read_bytes() == b"history"


@pytest.mark.parametrize("out", ["", "  ", "/", "/etc", "/usr/share/x", "/x.png"])
def test_empty_root_and_system_outputs_are_refused(out):
    for command, folder in (("sample", False), ("compare", True), ("export", True), ("synth", True)):
        if out == "/x.png" and folder:
            continue  # a new folder directly in the root (a mount point) is allowed; a file there is not
        with pytest.raises(RunDirError, match="empty|filesystem root or a system folder"):
            check_location(out, command=command, folder=folder)


def test_compare_and_export_and_synth_refuse_run_outputs(run, tmp_path):
    from genforge.evaluation.leaderboard.write import compare_runs
    from genforge.export import ExportError, output_dir
    from genforge.sampling.synth import check_new_output

    with pytest.raises(RunDirError, match="compare writes nothing"):
        compare_runs([run], out=run)
    with pytest.raises(RunDirError, match="empty"):
        compare_runs([run], out="")
    with pytest.raises(ExportError, match="inside the run"):
        output_dir(run, "onnx", run / "checkpoints" / "step-00000002")
    with pytest.raises(ExportError, match="empty"):
        output_dir(run, "onnx", "")
    assert output_dir(run, "onnx", None) == run / "export-onnx"
    with pytest.raises(RunDirError, match="synth writes nothing"):
        check_new_output(run / "checkpoints" / "step-00000002" / "synthetic")
    assert check_new_output(tmp_path / "synthetic") == tmp_path / "synthetic"


# ---------------------------------------------------------------------------- whole or not at all
def test_a_folder_output_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            (tmp / "a.png").write_bytes(b"a")
            raise KeyboardInterrupt  # killed while writing
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "a.png").write_bytes(b"a")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (target / "a.png").read_bytes() == b"a"


def test_leftovers_of_a_dead_writer_are_removed_at_the_next_start_and_a_live_ones_kept(tmp_path, capsys):
    dead, alive = dead_pid(), __import__("os").getpid()
    (tmp_path / f".x.png.{dead}_abc123.tmp").write_bytes(b"half")
    (tmp_path / f".x.png.{alive}_abc123.tmp").write_bytes(b"being written")
    (tmp_path / f".synthetic.{dead}_q1w2e3.tmp").mkdir()
    (tmp_path / f".synthetic.{dead}_q1w2e3.tmp" / "0.png").write_bytes(b"gigabytes")
    check_output(tmp_path / "x.png")
    assert not (tmp_path / f".x.png.{dead}_abc123.tmp").exists() and (tmp_path / f".x.png.{alive}_abc123.tmp").exists()
    from genforge.sampling.synth import check_new_output

    check_new_output(tmp_path / "synthetic")
    assert not (tmp_path / f".synthetic.{dead}_q1w2e3.tmp").exists()
    assert "left by an interrupted write" in capsys.readouterr().err


def test_synth_killed_mid_write_leaves_nothing(tmp_path, monkeypatch):
    from PIL import Image

    from genforge.sampling.synth import write_dataset

    calls = []

    def save(self, path, *a, **k):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        Path(path).write_bytes(b"png")

    monkeypatch.setattr(Image.Image, "save", save)
    x, y = torch.zeros(5, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1, 0, 1, 0])
    with pytest.raises(KeyboardInterrupt):
        write_dataset(x, y, tmp_path / "syn", {"folders": ["0", "1"]})
    assert list(tmp_path.iterdir()) == []


def tiny_gan(path: Path) -> Path:
    from genforge.models import build, config_class

    model = build(config_class("gan")(family="gan", channels=1, image_size=8, z_dim=8, g_width=8, d_width=8))
    model.save_pretrained(path, run_config={"task": "image"})
    return path


def test_export_killed_mid_write_leaves_no_folder_under_its_final_name(tmp_path, monkeypatch):
    import genforge.export.hf as hf
    from genforge.export import export_run

    run = tiny_gan(tmp_path / "run")

    def killed(model, run_dir, out):
        (out / "model.safetensors").write_bytes(b"trunc")
        raise KeyboardInterrupt

    real = hf.export_hf
    monkeypatch.setattr(hf, "export_hf", killed)
    with pytest.raises(KeyboardInterrupt):
        export_run(run, "hf")
    assert not (run / "export-hf").exists() and not [p for p in run.iterdir() if p.name.startswith(".export")]
    monkeypatch.setattr(hf, "export_hf", real)
    (run / f".export-hf.{dead_pid()}_zzzz.tmp").mkdir()  # a kill -9 leaves the staging folder: the next start
    assert export_run(run, "hf") == run / "export-hf"   # removes it, and nothing blocks the export
    assert (run / "export-hf" / "model.safetensors").is_file()
    assert not [p for p in run.iterdir() if p.name.startswith(".export")]


def _record(metric: str, sha: str, previous: dict | None) -> dict:
    """An eval.json record with one result for ``metric``, earlier results of the same weights in history."""
    protocol = Protocol(metric=metric, extractor="evaluator:digits", feature_dim=128, n_generated=10,
                        n_reference=300, reference_split="test", dataset="digits").to_dict()
    row = {"metric": metric, "value": 1.0, "std": None, "protocol_id": protocol_id(protocol), "protocol": protocol,
           "created": "2024-01-01T00:00:00+00:00"}
    history = [] if previous is None else [r for r in previous["results"] + previous["history"]
                                           if r["metric"] != metric]
    return {"format": EVAL_FORMAT, "created": row["created"], "results": [row], "history": history,
            "subject": {"weights_sha256": sha, "family": "gan", "step": 3}, "warnings": [], "notes": [],
            "options": {}, "timings": {}, "generation": {}}


def test_eval_killed_between_its_two_files_is_repaired_at_the_next_start(tmp_path, capsys):
    commit_record(tmp_path, lambda prev: _record("fid", "a" * 64, prev))
    newer = _record("kid", "a" * 64, read_eval(tmp_path))
    (tmp_path / "eval.json").write_text(json.dumps(newer))  # killed after eval.json's rename, before eval.md's
    (tmp_path / f".eval.md.{dead_pid()}_k1ll3d.tmp").write_text("half")
    repair_eval(tmp_path)
    assert (tmp_path / "eval.md").read_text() == format_markdown(newer)
    assert not list(tmp_path.glob(".eval.*.tmp")) and "disagreeing" in capsys.readouterr().err


def test_two_evals_of_one_run_at_once_both_keep_their_results(tmp_path):
    first_inside, done = threading.Event(), []

    def slow(prev):  # the first eval is merging and writing when the second finishes its metrics
        first_inside.set()
        time.sleep(0.5)
        return _record("fid", "a" * 64, prev)

    t = threading.Thread(target=lambda: done.append(commit_record(tmp_path, slow)))
    t.start()
    first_inside.wait(5)
    commit_record(tmp_path, lambda prev: _record("precision", "a" * 64, prev))
    t.join()
    record = read_eval(tmp_path)
    assert [r["metric"] for r in record["results"]] == ["precision"]
    assert [r["metric"] for r in record["history"]] == ["fid"]


def test_compare_killed_during_its_renames_is_completed_and_an_unfinished_one_removed(tmp_path, capsys):
    pid = dead_pid()
    (tmp_path / MD_NAME).write_text("old md")
    (tmp_path / HTML_NAME).write_text("new html")  # renamed before the kill
    done = tmp_path / f".leaderboard.{pid}_aaaa.tmp"
    done.mkdir()
    (done / MD_NAME).write_text("new md")
    (done / COMPLETE).write_text("")
    unfinished = tmp_path / f".leaderboard.{pid}_bbbb.tmp"
    unfinished.mkdir()
    (unfinished / HTML_NAME).write_text("half")
    finish_interrupted(tmp_path)
    assert (tmp_path / MD_NAME).read_text() == "new md" and (tmp_path / HTML_NAME).read_text() == "new html"
    assert sorted(p.name for p in tmp_path.iterdir()) == [HTML_NAME, MD_NAME]
    assert "interrupted compare" in capsys.readouterr().err


def test_inpaint_or_upscale_folder_killed_mid_write_leaves_no_folder(tmp_path, monkeypatch):
    import genforge.sampling.images as images
    from genforge.cli.apps import _save

    written = []

    def save_grid(img, path, **kw):
        if written:
            raise KeyboardInterrupt  # killed after the first image
        written.append(path)
        Path(path).write_bytes(b"png")

    monkeypatch.setattr(images, "save_grid", save_grid)
    paths = [tmp_path / "out" / f"{i}.png" for i in range(3)]
    with pytest.raises(KeyboardInterrupt):
        _save(torch.zeros(3, 1, 8, 8), paths, {})
    assert list(tmp_path.iterdir()) == []


def test_sample_file_killed_mid_write_keeps_the_earlier_file(tmp_path):
    from genforge.io import atomic_path

    out = tmp_path / "sample.png"
    out.write_bytes(b"earlier")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert out.read_bytes() == b"earlier" and list(tmp_path.iterdir()) == [out]


def test_hand_damaged_eval_json_of_other_weights_stays_out_of_the_model_card(tmp_path):
    from genforge.export import export_run

    run = tiny_gan(tmp_path / "run")
    record = _record("fid", "f" * 64, None)  # measured other weights (copied in by hand)
    record["results"][0]["value"] = 123.456
    (run / "eval.json").write_text(json.dumps(record))
    card = (export_run(run, "hf") / "README.md").read_text()
    assert "123.456" not in card and "other weights" in card


@pytest.mark.filterwarnings("ignore")
def test_tune_killed_before_its_trials_first_heartbeat_gets_the_slot_run_again(tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    import genforge.training.study as study_mod

    monkeypatch.setattr(study_mod, "GRACE", 1)
    study = study_mod.open_study("s", f"sqlite:///{tmp_path / 's.db'}", "minimize", False, 1)
    dead = study.ask()  # the worker was killed here, before recording any heartbeat
    alive = study.ask()
    study._storage.record_heartbeat(alive._trial_id)
    study_mod._fail_stale(study)
    assert [t.state.name for t in study.trials] == ["RUNNING", "RUNNING"]  # not yet past the grace period
    time.sleep(1.2)
    study._storage.record_heartbeat(alive._trial_id)
    study_mod._fail_stale(study)
    assert [t.state.name for t in study.trials] == ["FAIL", "RUNNING"] and dead.number == 0


def test_hand_damaged_eval_json_of_other_weights_is_marked_stale_by_compare(tmp_path):
    from genforge.evaluation.leaderboard.write import compare_runs

    run = tiny_gan(tmp_path / "run")
    (run / "eval.json").write_text(json.dumps(_record("fid", "f" * 64, None)))
    md = compare_runs([run], out=tmp_path / "board").md_path.read_text()
    assert "stale" in md and "changed since this evaluation" in md
