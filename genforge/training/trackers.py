"""Experiment trackers beyond ``metrics.jsonl``: MLflow and Weights & Biases (TensorBoard lives in the logger).

``train.trackers: [tensorboard, mlflow, wandb]`` picks them. Each gets the resolved recipe as parameters,
every logged scalar with its step, and at the end the run's artifacts (sample grids, ``eval.json``,
``best.json``, the model folder). MLflow writes to ``train.tracking_uri`` — by default an SQLite store
``mlflow.db`` (artifacts in ``mlartifacts/``) beside the run directory, so runs under one ``runs/`` share
it; W&B runs offline (``wandb sync`` uploads later) unless ``WANDB_MODE`` says otherwise. Both are
optional extras (``pip install genforge[track]``): naming one that is not installed is an error before
training starts. Only rank 0 of a data-parallel job tracks.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Protocol

from genforge.config import ConfigError


class Tracker(Protocol):
    def log_metrics(self, step: int, values: dict[str, float]) -> None: ...
    def log_artifacts(self, files: list[Path]) -> None: ...
    def close(self) -> None: ...


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 1e-3}}`` → ``{"train.lr": "0.001"}`` (parameters as strings, as trackers keep them)."""
    out: dict[str, str] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def _finite(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class MLflowTracker:
    """One MLflow run per training process, named after the run directory (tag ``genforge.run_dir``)."""

    def __init__(self, run_dir: Path, params: dict[str, Any], uri: str | None, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri or f"sqlite:///{run_dir.resolve().parent / 'mlflow.db'}"
        self.client = MlflowClient(self.uri)
        found = self.client.get_experiment_by_name(experiment)
        # a local SQLite store keeps its artifacts beside it (not in ./mlruns of whatever the cwd is)
        local = Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts" if self.uri.startswith("sqlite:///") else None
        exp_id = found.experiment_id if found else self.client.create_experiment(
            experiment, artifact_location=local.as_uri() if local else None)
        self.run_id = self.client.create_run(exp_id, run_name=run_dir.name,
                                             tags={"genforge.run_dir": str(run_dir.resolve())}).info.run_id
        from mlflow.entities import Param

        items = list(flatten(params).items())
        for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=[Param(k, v[:6000]) for k, v in items[i:i + 100]])

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in _finite(values).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_artifacts(self, files: list[Path]) -> None:
        for f in files:
            if f.is_dir():
                self.client.log_artifacts(self.run_id, str(f), artifact_path=f.name)
            elif f.is_file():
                self.client.log_artifact(self.run_id, str(f))

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


class WandbTracker:
    """A W&B run, offline by default, in the run directory's ``wandb/``."""

    def __init__(self, run_dir: Path, params: dict[str, Any], experiment: str) -> None:
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=experiment, name=run_dir.name, dir=str(run_dir), config=params,
                              mode=os.environ.get("WANDB_MODE", "offline"), reinit="create_new")

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        self.run.log(_finite(values), step=step)

    def log_artifacts(self, files: list[Path]) -> None:
        art = self.wandb.Artifact(f"run-{self.run.id}", type="genforge-run")
        for f in files:
            if f.is_dir():
                art.add_dir(str(f), name=f.name)
            elif f.is_file():
                art.add_file(str(f))
        self.run.log_artifact(art)

    def close(self, status: str = "FINISHED") -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


def check_installed(names: list[str]) -> None:
    """Refuse, before anything is written, a tracker whose package is missing."""
    for name, module in (("mlflow", "mlflow"), ("wandb", "wandb")):
        if name in names:
            try:
                __import__(module)
            except ImportError:
                raise ConfigError(f"train.trackers names {name}, which is not installed: pip install "
                                  f"'genforge[track]' (or drop it from train.trackers)") from None


def open_trackers(names: list[str], run_dir: Path, params: dict[str, Any], uri: str | None,
                  experiment: str) -> list[Tracker]:
    """The trackers ``names`` asks for besides TensorBoard, started with the run's parameters."""
    check_installed(names)
    out: list[Tracker] = []
    if "mlflow" in names:
        out.append(MLflowTracker(run_dir, params, uri, experiment))
    if "wandb" in names:
        out.append(WandbTracker(run_dir, params, experiment))
    return out
