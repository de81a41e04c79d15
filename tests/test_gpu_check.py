"""``bench/gpu_check.py`` on the CPU: the tiny recipes train and sample, DDP is skipped with its reason, a text
run is served under load, and a failure is a FAILED row with exit status 1 (the table is printed either way).

The quick run is done once, in this process (torch is already imported), and shared by the checks.
"""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
TINY = sorted(p.stem for p in (REPO / "genforge" / "recipes").glob("tiny-*.yaml"))
HEAD = ("step", "device", "steps/requests", "wall s", "rate", "result")


def run_check(*args: str, monkeypatch, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``bench/gpu_check.py ARGS`` run as ``__main__`` in this process."""
    monkeypatch.setattr(sys, "argv", [str(BENCH / "gpu_check.py"), *args])
    monkeypatch.setattr(sys, "path", [str(BENCH), *sys.path])
    capsys.readouterr()
    try:
        runpy.run_path(str(BENCH / "gpu_check.py"), run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def table(out: str) -> dict[str, dict[str, str]]:
    """The final table's rows by step name: {column: cell}."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["step", "device"])
    rows = {}
    for line in lines[start + 1:]:
        cells = re.split(r"\s{2,}", line.strip(), maxsplit=5)
        assert len(cells) == 6, line
        rows[cells[0]] = dict(zip(HEAD, cells))
    return rows


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One ``--quick --device cpu --steps 1`` run with an empty data folder (text recipes on the stand-in
    corpus, which is also smaller than Tiny Shakespeare): (exit code, stdout, rows)."""
    empty = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as mp:
        capture = _Capture()
        mp.setattr(sys, "stdout", capture)
        mp.setenv("GENFORGE_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setattr(sys, "argv", [str(BENCH / "gpu_check.py"), "--quick", "--device", "cpu", "--steps", "1",
                                  "--data-dir", str(empty)])
        mp.setattr(sys, "path", [str(BENCH), *sys.path])
        try:
            runpy.run_path(str(BENCH / "gpu_check.py"), run_name="__main__")
            code = 0
        except SystemExit as e:
            code = e.code
    out = capture.getvalue()
    return code, out, table(out)


class _Capture:
    """A stdout for a module-scoped fixture (capsys is function-scoped)."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def getvalue(self) -> str:
        return "".join(self.parts)


def test_quick_cpu_trains_every_tiny_recipe(quick):
    code, out, rows = quick
    assert code == 0, out
    trained = {name.removeprefix("train "): row for name, row in rows.items() if name.startswith("train ")}
    assert sorted(trained) == TINY
    for name, row in trained.items():
        done = "ok; fp32, an encoder: not sampled" if name == "tiny-clip" else "ok; fp32, sample "
        assert row["result"].startswith(done), (name, row)
        assert row["device"] == "cpu" and row["steps/requests"] == "1 steps"
        assert re.fullmatch(r"[\d,]+ (images|tokens)/s", row["rate"]), row
    assert "stand-in text" in trained["tiny-gpt"]["result"]
    machine = [line for line in out.splitlines() if line.startswith("device: cpu, ")]
    assert len(machine) == 1 and "; torch " in machine[0]  # the machine is named


def test_quick_cpu_skips_ddp_with_its_reason(quick):
    _, _, rows = quick
    ddp = [row for name, row in rows.items() if name.startswith("ddp")]
    assert len(ddp) == 1
    assert ddp[0]["result"].startswith("skipped: needs 2 GPUs (this machine has 0)")


def test_quick_cpu_serves_the_text_run(quick):
    _, _, rows = quick
    row = rows["serve tiny-gpt"]
    assert row["result"].startswith("ok; "), row
    assert ", 0 errors," in row["result"]
    assert row["rate"].endswith(" tokens/s")


def test_an_unknown_recipe_is_a_failed_row_and_exit_1(monkeypatch, capsys):
    code, out, _ = run_check("--recipes", "no-such-recipe", "tiny-vae", "--device", "cpu", "--steps", "1",
                             "--no-ddp", "--no-serve", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1
    rows = table(out)
    assert list(rows) == ["train no-such-recipe", "train tiny-vae"]  # the failure does not stop the others
    assert rows["train no-such-recipe"]["result"].startswith("FAILED: ")
    assert "no-such-recipe" in rows["train no-such-recipe"]["result"]
    assert rows["train tiny-vae"]["result"].startswith("ok")


def test_serving_without_a_text_run_is_skipped(monkeypatch, capsys):
    code, out, _ = run_check("--recipes", "tiny-vae", "--device", "cpu", "--steps", "1", "--no-ddp",
                             monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, out
    assert table(out)["serve text"]["result"] == "skipped: no text run was trained above"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_cuda_is_one_line_and_exit_2(monkeypatch, capsys):
    code, out, err = run_check("--device", "cuda", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and out == ""
    assert err == "gpu_check.py: --device cuda but CUDA is not available here; pass --device cpu\n"


@pytest.mark.slow
def test_cpu_ddp_runs_two_gloo_processes(monkeypatch, capsys):
    code, out, _ = run_check("--quick", "--device", "cpu", "--steps", "2", "--recipes", "tiny-vae", "--cpu-ddp",
                             "--no-serve", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, out
    rows = table(out)
    for recipe in ("tiny-gan", "tiny-gpt"):
        assert rows[f"ddp 2x {recipe}"]["device"] == "2x cpu (gloo)"
        assert rows[f"ddp 2x {recipe}"]["result"].startswith("ok; fp32")


@pytest.mark.gpu
def test_quick_cuda(monkeypatch, capsys):
    """On a CUDA machine: the tiny recipes in bf16 autocast, and NCCL DDP with SyncBatchNorm on 2 GPUs."""
    code, out, _ = run_check("--quick", "--device", "cuda", "--steps", "5", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, out
    rows = table(out)
    for recipe in TINY:
        assert rows[f"train {recipe}"]["result"].startswith("ok; bf16-mixed"), rows[f"train {recipe}"]
    if torch.cuda.device_count() >= 2:
        assert "BatchNorm → SyncBatchNorm" in rows["ddp 2x tiny-gan"]["result"]
