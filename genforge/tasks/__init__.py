"""Modality tasks: the one place that knows what image and text runs need.

``TASKS`` maps the task recorded in a run's ``config.yaml`` to its
:class:`~genforge.tasks.base.Task`; a model family's config says which task it
belongs to (``ImageModelConfig.task == "image"``). Layer: above evaluation and
sampling, below training and the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genforge.rundir import RunDir, RunDirError
from genforge.tasks.base import Task, TrainingHooks
from genforge.tasks.image import ImageTask
from genforge.tasks.text import TextTask

TASKS: dict[str, Task] = {"image": ImageTask(), "text": TextTask()}

__all__ = ["TASKS", "Task", "TrainingHooks", "get_task", "open_run"]


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown one is a ``RunDirError`` listing the known tasks."""
    if name not in TASKS:
        raise RunDirError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def open_run(run_dir: str | Path, *, device: str = "cpu", best: bool = False) -> Any:
    """Load a run once for sampling: the sampling pipeline of its recorded task.

    Args:
        run_dir: a directory written by ``genforge train``.
        best: the weights with the best validation loss (``best/``) instead of the final ones.
    """
    run = RunDir(run_dir)
    run.require()
    task = get_task(run.task())
    if best:
        if not run.best.is_run():
            raise RunDirError(f"{run.path} has no best model ({run.best.path} is missing); only runs that "
                              f"evaluate a validation loss keep one")
        run = run.best
    return task.open(run.path, device=device)
