"""``genforge tune``: space validation, and a study shared by two workers end to end on tiny-gpt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from genforge.cli import main  # noqa: E402
from genforge.config import ConfigError  # noqa: E402
from genforge.training.run import load_recipe  # noqa: E402
from genforge.training.tune import load_space, metric_key, override  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FAST = ["--set", "data.verify=false", "--set", "train.max_steps=12", "--set", "train.eval_every=4",
        "--set", "train.sample_every=100", "--set", "train.checkpoint_every=100", "--set", "train.log_every=4"]


@pytest.fixture
def corpus(tmp_path, monkeypatch) -> Path:
    """A folder with a small play-like ``input.txt``; the token cache goes to tmp_path."""
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "corpus"
    d.mkdir()
    lines = [f"{('ROMEO', 'JULIET', 'NURSE')[i % 3]}:\nI pray thee, speak of love and night {i % 7}.\n\n"
             for i in range(300)]
    (d / "input.txt").write_text("".join(lines), encoding="utf-8")
    return d


def space_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(text, encoding="utf-8")
    raw, _ = load_recipe("tiny-gpt")
    with pytest.raises(ConfigError) as e:
        load_space(path, raw)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("text, expected", [
    ("train.lrr: {type: float, low: 1.0e-4, high: 1.0e-2}\n", "train.lrr"),
    ("model.widthh: {type: int, low: 8, high: 64}\n", "model.widthh"),
    ("train.lr: {type: float, low: 1.0e-2, high: 1.0e-2}\n", "empty range"),
    ("model.n_layer: {type: int, low: 4, high: 2}\n", "empty range"),
    ("train.optimizer: {type: categorical}\n", "choices"),
    ("train.lr: {type: normal, low: 0.1, high: 1}\n", "type must be one of"),
    ("train.lr: {type: float, low: 0.0, high: 1.0, log: true}\n", "log needs low > 0"),
])
def test_space_validation_errors_are_one_clear_line(tmp_path, text, expected):
    assert expected in space_error(tmp_path, text)


def test_valid_space_and_value_formatting(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("train.lr: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}\n"
                    "model.n_layer: {type: int, low: 1, high: 3}\n"
                    "train.optimizer: {type: categorical, choices: [adam, adamw]}\n", encoding="utf-8")
    assert list(load_space(path, load_recipe("tiny-gpt")[0])) == ["train.lr", "model.n_layer", "train.optimizer"]
    assert override("train.lr", 1e-5) == "train.lr=1.0e-05"  # read back as a float, not the string '1e-05'
    keys = ["val/loss", "val/ppl", "eval/fid@64", "eval/fid_extractor"]
    assert metric_key("eval/val/loss", keys) == metric_key("val/loss", keys) == "val/loss"
    assert metric_key("eval/fid", keys) == metric_key("fid", keys) == metric_key("eval/fid@64", keys) == "eval/fid@64"
    assert metric_key("eval/fid", [*keys, "eval/fid@128"]) is None  # two sizes: name one
    assert metric_key("val/losss", keys) is None


def test_cli_reports_a_bad_space_and_an_unknown_metric(tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train.nope: {type: float, low: 0.1, high: 1}\n", encoding="utf-8")
    argv = ["tune", "tiny-gpt", "--trials", "1", "--data-dir", str(corpus), *FAST]
    assert main([*argv, "--space", str(bad), "--metric", "val/loss"]) == 2
    assert "train.nope" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text("train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n", encoding="utf-8")
    assert main([*argv, "--space", str(good), "--metric", "val/losss", "--set", "train.max_steps=4"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("genforge tune: error: --metric 'val/losss'") and "'val/loss'" in last


def test_two_workers_share_one_study(tmp_path, corpus):
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {type: float, low: 1.0e-6, high: 3.0e-2, log: true}\n", encoding="utf-8")
    study_dir = tmp_path / "study"
    cmd = [sys.executable, "-m", "genforge", "tune", "tiny-gpt", "--space", str(space), "--trials", "12",
           "--metric", "eval/val/loss", "--out", str(study_dir), "--data-dir", str(corpus), *FAST]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    workers = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for w, (out, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-2000:]
    print(f"two workers, 12 trials: {time.perf_counter() - t:.1f} s")
    study = optuna.load_study(study_name="tiny-gpt", storage=f"sqlite:///{study_dir / 'study.db'}")
    done = [tr for tr in study.get_trials() if tr.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 12
    assert len({tr.number for tr in done}) == 12
    run_dirs = {tr.user_attrs["run_dir"] for tr in done}
    assert len(run_dirs) == 12 and all((Path(d) / "metrics.jsonl").is_file() for d in run_dirs)
    assert sum(tr.state.name == "PRUNED" for tr in done) >= 1
    assert all(int(s.split()[0]) > 0 for s in (o.split("study tiny-gpt: ")[1] for o, _ in outputs))  # both worked
    for name in ("results.csv", "results.md", "best.yaml", "history.png", "importances.png", "leaderboard.html"):
        assert (study_dir / name).is_file(), name
    board = (study_dir / "leaderboard.md").read_text()  # `genforge compare` across the trials
    assert sum(f"| trial-{n:04d} | gpt | text |" in board for n in range(12)) == 12
    assert board.count("val/loss") >= 12
    rows = (study_dir / "results.csv").read_text().splitlines()
    assert rows[1].split(",")[1] == "COMPLETE" and len(rows) == 13
    run = tmp_path / "best-run"
    assert main(["train", "--config", str(study_dir / "best.yaml"), "--set", "train.max_steps=2", "--out", str(run),
                 "--no-progress", "--no-verify"]) == 0
    assert (run / "model.safetensors").is_file()


def test_an_image_recipe_is_tuned_on_its_proxy_fid(tmp_path, monkeypatch, capsys):
    """``--metric eval/fid`` names the ``eval/fid@<n>`` the trainer logs; each trial's value is its last one."""
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n", encoding="utf-8")
    study_dir = tmp_path / "study"
    assert main(["tune", "tiny-gan", "--space", str(space), "--trials", "2", "--metric", "eval/fid",
                 "--out", str(study_dir), "--set", "train.max_steps=6", "--set", "train.eval_every=3",
                 "--set", "train.eval_samples=32", "--set", "train.sample_every=0"]) == 0
    assert "best          : trial " in capsys.readouterr().out
    study = optuna.load_study(study_name="tiny-gan", storage=f"sqlite:///{study_dir / 'study.db'}")
    for trial in study.trials:
        log = [json.loads(line) for line in (Path(trial.user_attrs["run_dir"]) / "metrics.jsonl").open()]
        fids = [r["eval/fid@32"] for r in log if "eval/fid@32" in r]
        assert len(fids) == 2 and trial.value == pytest.approx(fids[-1])
        assert list(trial.intermediate_values) == [3, 6]


ASK_WARNING = "ignore:Heartbeat of storage"  # optuna's note, on a bare ask(), that heartbeats suit optimize()


@pytest.mark.filterwarnings(ASK_WARNING)
def test_no_prune_runs_every_trial_to_the_end(tmp_path):
    from genforge.training.study import open_study

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    for name, prune in (("median", True), ("none", False)):
        study = open_study(name, storage, "minimize", prune=prune)
        decisions = []
        for value in (1.0, 1.0, 5.0):  # the third is worse than the median at step 1
            trial = study.ask()
            trial.report(value, 1)
            decisions.append(trial.should_prune())
            study.tell(trial, value)
        assert decisions == [False, False, prune], name


@pytest.mark.filterwarnings(ASK_WARNING)
def test_a_killed_workers_trial_is_failed_and_its_slot_run_again(tmp_path):
    """A trial whose worker stopped recording heartbeats is failed by the next worker, which runs the slot
    again; a trial that keeps beating is never failed, however long it trains."""
    from genforge.training.study import GRACE, _fail_stale, open_study, work

    study = open_study("s", f"sqlite:///{tmp_path / 'study.db'}", "minimize", prune=False, heartbeat_s=1)
    dead = study.ask()  # a worker that was killed: one heartbeat, then silence
    study._storage.record_heartbeat(dead._trial_id)
    seen = []

    def run_one(trial) -> float:
        if trial.number == 1:  # outlive the dead worker's grace period while beating
            time.sleep(GRACE + 1.5)
            _fail_stale(study)
            seen.append({t.number: t.state.name for t in study.get_trials()})
        return float(trial.number)

    ran, notes = work(study, 2, run_one)
    assert seen == [{0: "FAIL", 1: "RUNNING"}]
    assert {t.number: t.state.name for t in study.get_trials()} == {0: "FAIL", 1: "COMPLETE", 2: "COMPLETE"}
    assert ran == 2 and notes == []
