"""The bench scripts' command lines: ``--help`` works, and missing data is one line and exit 2 (no benchmark runs)."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if "__main__" in p.read_text())  # helpers (common, peak) have none
# Scripts that read real data, and what they name when it is missing.
DATA_SCRIPTS = {
    "applications.py": "MNIST",
    "diffusion_distill.py": "MNIST",
    "diffusion_steps.py": "MNIST",
    "diffusion_vs_diffusers.py": "MNIST",
    "eval_images.py": "MNIST",
    "gpt_sampling.py": "Tiny Shakespeare",
    "gpt_time_to_quality.py": "Tiny Shakespeare",
    "gpt_train.py": "Tiny Shakespeare",
    "prdc_sample_size.py": "MNIST",
}
TIMEOUT = 60  # seconds; each call only parses its arguments and checks a folder


def run(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-c", code] if code is not None else [sys.executable, *args]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)


def run_here(script: str, *args: str, monkeypatch, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``bench/SCRIPT ARGS`` run as ``__main__`` in this process, where torch is
    already imported (a fresh interpreter spends seconds importing it); sys.path and argv are restored after."""
    monkeypatch.setattr(sys, "argv", [str(BENCH / script), *args])
    monkeypatch.setattr(sys, "path", [str(BENCH), *sys.path])
    capsys.readouterr()
    try:
        runpy.run_path(str(BENCH / script), run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def test_data_scripts_are_the_ones_with_data_dir():
    """Every script that takes --data-dir is tested below, and none hard-codes the shared data folder."""
    with_flag = {name for name in SCRIPTS if "add_data_dir(" in (BENCH / name).read_text()}
    assert with_flag == set(DATA_SCRIPTS)
    for name in SCRIPTS:
        assert '"shared"' not in (BENCH / name).read_text(), f"{name}: use common.default_data_dir"


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script, monkeypatch, capsys):
    code, out, err = run_here(script, "--help", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert out.startswith("usage: ")


@pytest.mark.parametrize("script", sorted(DATA_SCRIPTS))
def test_missing_data_exits_2_with_one_line(script, tmp_path, monkeypatch, capsys):
    code, out, err = run_here(script, "--data-dir", str(tmp_path), monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2, out + err
    assert out == ""  # nothing started: no idle check, no timing
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{script}: {DATA_SCRIPTS[script]} not found: {tmp_path} lacks ")
    assert "pass --data-dir DIR" in lines[0]


def test_missing_folder_is_named(tmp_path, monkeypatch, capsys):
    code, _, err = run_here("eval_images.py", "--data-dir", str(tmp_path / "nowhere"), monkeypatch=monkeypatch,
                            capsys=capsys)
    assert code == 2
    assert err == (f"eval_images.py: MNIST not found: {tmp_path / 'nowhere'} is not a folder; pass --data-dir "
                           f"DIR with the folder that holds train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                           f"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, or --synthetic to time synthetic "
                           f"images\n")


def test_gpt_train_worker_keeps_messages_off_the_json_pipe(tmp_path):
    proc = run(str(BENCH / "gpt_train.py"), "--worker", "plain", "--data-dir", str(tmp_path))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"gpt_train.py: Tiny Shakespeare not found: {tmp_path} lacks input.txt; ")


def test_gpt_train_parent_reports_a_failed_worker(tmp_path):
    """A worker that fails is reported with its own message and exit status, not as a JSON error."""
    code = (f"import sys; sys.argv = ['gpt_train.py']; sys.path.insert(0, {str(BENCH)!r}); import gpt_train as g\n"
            f"w = g.Worker('plain', 'plain loop fp32', ['--data-dir', {str(tmp_path)!r}])\n"
            f"try:\n    w.turn()\nexcept g.WorkerFailed as e:\n    print(e.code, e)\nw.close()\n")
    proc = run(code=code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"2 the plain loop fp32 worker died (exit 2): gpt_train.py: Tiny Shakespeare not "
                                  f"found: {tmp_path} lacks input.txt; ")
    assert proc.stderr == ""  # its message is reported once, in the failure
