"""The models a server holds: each run directory loaded once, with its batching engine.

A model is named after its run directory, or ``NAME=RUN``. Start-up checks every
run first (:func:`check_specs`, cheap: names, directories, recorded tasks), so a
bad one fails before the server binds; the weights load afterwards
(:meth:`ServedModel.load`), while ``/readyz`` answers 503.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genforge.rundir import RunDir, RunDirError
from genforge.sampling.batcher import ImageBatcher
from genforge.sampling.engine import TextEngine
from genforge.serve.settings import ServeSettings

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass(eq=False)
class ServedModel:
    """One run behind the API: ``name``, its run directory and task; ``pipe`` and its engine once loaded."""

    name: str
    path: Path
    task: str
    created: int
    pipe: Any = None
    engine: TextEngine | None = None
    batcher: ImageBatcher | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def load(self, settings: ServeSettings, *, on_batch=None) -> None:
        """Load the weights and start the model's engine (text) or batcher (images)."""
        from genforge.tasks import open_run

        self.pipe = open_run(self.path)
        if self.task == "text":
            self.engine = TextEngine(self.pipe, max_rows=settings.max_batch, max_queue=settings.max_queue,
                                     on_batch=on_batch)
        else:
            self.batcher = ImageBatcher(self.pipe, max_batch=settings.max_batch, window_s=settings.batch_window_s,
                                        max_queue=settings.max_queue, on_batch=on_batch)
        self.info = self._describe()

    def close(self) -> None:
        for worker in (self.engine, self.batcher):
            if worker is not None:
                worker.close()

    @property
    def running(self) -> int:
        if self.engine is not None:
            return len(self.engine.running)
        return 1 if self.batcher is not None and self.batcher.busy else 0

    @property
    def waiting(self) -> int:
        worker = self.engine or self.batcher
        return worker.jobs_waiting if worker is not None else 0

    def _describe(self) -> dict[str, Any]:
        """What ``/v1/models`` says about the model beyond OpenAI's fields."""
        model = self.pipe.model
        options = {f.name: _plain(getattr(model.sample_options(), f.name))
                   for f in dataclasses.fields(model.sample_options)}
        out: dict[str, Any] = {"family": model.family, "task": self.task, "capabilities": list(model.capabilities()),
                               "conditions": list(model.accepted_conditions()), "sample_options": options}
        if self.task == "text":
            out["context_length"] = model.context_length
            out["vocab_size"] = model.vocab_size
        else:
            c, h, w = model.image_shape
            out.update(channels=c, image_size=h, num_classes=model.num_classes,
                       class_names=model.class_names, sample_prompts=list(model.config.sample_prompts))
        return out


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def parse_spec(spec: str) -> tuple[str, Path]:
    """``RUN`` or ``NAME=RUN`` → (name, path); the name defaults to the run directory's name."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = Path(spec).resolve().name, spec
    if not NAME.match(name):
        raise ValueError(f"model name {name!r} (from {spec!r}) must be letters, digits, '.', '_', ':' or '-' "
                         f"(at most 128); give one with NAME=RUN")
    return name, Path(path)


def check_specs(specs: list[str]) -> list[ServedModel]:
    """The models named by ``specs``, checked (not loaded): RunDirError / ValueError naming the bad one."""
    if not specs:
        raise ValueError("give at least one run directory to serve")
    models: dict[str, ServedModel] = {}
    for spec in specs:
        name, path = parse_spec(spec)
        if name in models:
            raise ValueError(f"two models are named {name!r}; name them with NAME=RUN")
        run = RunDir(path).require()
        try:
            task = run.task()
        except RunDirError:
            raise
        except Exception as e:  # noqa: BLE001 - an unreadable config is the run's problem
            raise RunDirError(f"{path}: cannot read its config ({e})") from None
        run.verify_chain()  # a missing or changed parent run is refused before the server binds
        models[name] = ServedModel(name=name, path=path, task=task, created=int(run.weights.stat().st_mtime))
    return list(models.values())
