"""Two trainings launched into one run directory at the same instant: exactly one runs, the other is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from genforge.rundir import LOCK, RunDirError, RunLock

REPO = Path(__file__).resolve().parents[2]

# A worker imports genforge once, then for each line "<start time> <argv as JSON>" sleeps until that
# instant, runs the command in-process and answers with a JSON line: exit code and stderr.
WORKER = textwrap.dedent("""
    import contextlib, io, json, sys, time
    from genforge.cli import main
    for line in sys.stdin:
        start, argv = line.split(" ", 1)
        time.sleep(max(0.0, float(start) - time.time()))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(json.loads(argv))
        print(json.dumps({"code": code, "err": err.getvalue()}), flush=True)
""")


def _train(out: Path, seed: int) -> list[str]:
    return ["train", "tiny-gan", "--out", str(out), "--no-progress", "--set", f"train.seed={seed}",
            "--set", "train.max_steps=6", "--set", "train.checkpoint_every=2", "--set", "train.sample_every=3",
            "--set", "train.log_every=1", "--set", "train.num_threads=1"]


@pytest.mark.parametrize("trials", [pytest.param(4, id="4-trials"),
                                    pytest.param(20, id="20-trials", marks=pytest.mark.slow)])
def test_simultaneous_trainings_into_one_directory(tmp_path, trials):
    workers = [subprocess.Popen([sys.executable, "-c", WORKER], cwd=REPO, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, bufsize=1) for _ in range(2)]
    try:
        for w in workers:  # warm up: both have imported genforge before the first trial
            w.stdin.write(f"0 {json.dumps(['recipes'])}\n")
        for w in workers:
            assert json.loads(w.stdout.readline())["code"] == 0
        in_use = 0
        for trial in range(trials):
            out = tmp_path / f"run-{trial}"
            start = time.time() + 0.3
            for seed, w in enumerate(workers):
                w.stdin.write(f"{start} {json.dumps(_train(out, seed))}\n")
            results = [json.loads(w.stdout.readline()) for w in workers]
            codes = sorted(r["code"] for r in results)
            assert codes == [0, 2], f"trial {trial}: exit codes {codes}: {[r['err'][-300:] for r in results]}"
            winner = next(seed for seed, r in enumerate(results) if r["code"] == 0)
            loser = results[1 - winner]["err"].strip().splitlines()
            assert len(loser) == 1 and ("is in use" in loser[0] or "already exists and is not empty" in loser[0])
            in_use += "is in use" in loser[0]
            cfg = yaml.safe_load((out / "config.yaml").read_text())
            assert cfg["train"]["seed"] == winner
            steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
                     if "eval_s" not in line]
            assert steps == list(range(1, 7)), f"trial {trial}: metrics.jsonl holds steps {steps}"
            assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000004", "step-00000006"]
            assert (out / LOCK).read_text() == ""  # released by the survivor
        assert in_use >= trials // 2, f"only {in_use} of {trials} trials overlapped: the test did not race"
    finally:
        for w in workers:
            w.stdin.close()
            w.wait(timeout=60)


def test_a_held_lock_names_its_owner(tmp_path):
    with RunLock(tmp_path / "run") as held:
        assert f"pid {os.getpid()}" in held.owner()
        code = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            from genforge.rundir import RunLock, RunDirError
            try:
                RunLock({str(tmp_path / 'run')!r}).acquire()
            except RunDirError as e:
                print(e)
        """)], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert "is in use" in code.stdout and f"pid {os.getpid()}" in code.stdout
    RunLock(tmp_path / "run").acquire().release()  # free again


def test_a_file_in_the_way_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match="a file is in the way"):
        RunLock(tmp_path / "f" / "run").acquire()
