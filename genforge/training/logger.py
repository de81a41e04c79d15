"""Metrics as JSON lines (``metrics.jsonl``) plus TensorBoard event files (``tb/``)."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from genforge.rundir import RunDir


class MetricsLogger:
    """Appends one JSON object per line; mirrors numeric values to TensorBoard.

    Appending keeps the history of a resumed run in one file; every line has
    ``step`` and wall-clock ``time`` (Unix seconds).
    """

    def __init__(self, run_dir: Path, *, tensorboard: bool = True, trackers: Sequence[Any] = ()) -> None:
        self.path = RunDir(run_dir).metrics_log
        self.trackers = list(trackers)  # MLflow, W&B (genforge.training.trackers): every scalar, prefixed
        self._file = open(self.path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(run_dir / "tb"))
            except ImportError as e:  # tensorboard is a declared dependency; stay usable without it
                print(f"genforge: TensorBoard logging disabled ({e})", file=sys.stderr)

    def log(self, step: int, values: dict[str, Any], *, prefix: str = "train") -> None:
        record = {"step": step, "time": round(time.time(), 3)}
        for k, v in values.items():
            record[k] = None if isinstance(v, float) and not math.isfinite(v) else v
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(f"{prefix}/{k}", v, step)
        for tracker in self.trackers:
            tracker.log_metrics(step, {f"{prefix}/{k}": v for k, v in values.items()})

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


class NullLogger(MetricsLogger):
    """Logs nothing: the ranks other than 0 of a data-parallel job."""

    def __init__(self) -> None:
        pass

    def log(self, step: int, values: dict[str, Any], *, prefix: str = "train") -> None:
        pass

    def close(self) -> None:
        pass


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of the run's metric log (an absent file gives an empty list)."""
    path = RunDir(run_dir).metrics_log
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
