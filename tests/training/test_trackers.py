"""Experiment trackers: MLflow read back with its own client; W&B offline; bad tracker names."""

from __future__ import annotations

import json

import pytest

from genforge.config import ConfigError
from genforge.training.run import train
from genforge.training.trackers import flatten

FAST = ["train.max_steps=6", "train.log_every=2", "train.sample_every=0", "train.checkpoint_every=0",
        "train.progress=false", "train.eval_samples=50"]


def test_flatten_gives_dotted_string_parameters():
    assert flatten({"train": {"lr": 0.001, "betas": [0.9, 0.99]}, "task": "image"}) == {
        "train.lr": "0.001", "train.betas": "[0.9, 0.99]", "task": "image"}


def test_mlflow_run_reads_back_params_metrics_and_artifacts(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    out = train("tiny-vae", overrides=[*FAST, "train.trackers=[tensorboard, mlflow]", f"train.tracking_uri={uri}",
                                       "train.experiment=tracked"], out=tmp_path / "run")
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tracked")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["train.max_steps"] == "6" and run.data.params["model.family"] == "vae"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [2, 4, 6]
    logged = [json.loads(line) for line in (out.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m.value for m in history] == pytest.approx([r["loss"] for r in logged if "loss" in r])
    scalars = {f"train/{k}" for r in logged for k, v in r.items() if k not in ("step", "time")
               and isinstance(v, float)}
    assert scalars and scalars <= set(run.data.metrics)  # every logged scalar
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "model.safetensors", "samples.png"} <= names
    assert (out.run_dir / "tb").is_dir()


def test_tensorboard_can_be_left_out(tmp_path):
    out = train("tiny-vae", overrides=[*FAST, "train.trackers=[]"], out=tmp_path / "run")
    assert not (out.run_dir / "tb").exists() and (out.run_dir / "metrics.jsonl").is_file()


def test_wandb_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = train("tiny-vae", overrides=[*FAST, "train.trackers=[wandb]"], out=tmp_path / "run")
    runs = list((out.run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


@pytest.mark.parametrize("value, message", [
    ("[tensorbord]", "trackers: unknown tracker(s) ['tensorbord']; choose from ['tensorboard', 'mlflow', 'wandb']"),
    ("[mlflow, mlflow]", "names one twice"),
])
def test_bad_tracker_names_are_refused_before_anything_is_written(tmp_path, value, message):
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        train("tiny-vae", overrides=[*FAST, f"train.trackers={value}"], out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
