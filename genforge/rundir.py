"""The run directory: the name of every file and folder in it, and the run's task.

A run directory is made by ``genforge train`` and read by every other command::

    config.yaml          resolved recipe: task, data, model, train, sample (+ genforge_version)
    model.safetensors    weights used for sampling (the EMA when train.ema_decay > 0)
    tokenizer.json       text runs: the tokenizer
    metrics.jsonl        one JSON line per log step (losses, lr, throughput) and per evaluation
    tb/                  TensorBoard events
    samples/step-*.EXT   periodic samples (.png grids for images, .txt for text)
    samples.EXT          the final samples
    checkpoints/step-*/  model.safetensors, ema.safetensors, state.pt (the last K kept)
    best/                text runs: the model with the lowest validation loss (+ best.json)
    eval.json, eval.md   results of ``genforge eval``

A run may stand on other runs (an autoencoder, a text encoder, a parent it was fine-tuned from): ``config.yaml``'s
``parents`` maps each role to the run's path and the sha256 of the weights used (:meth:`RunDir.verify_chain`).

The run's *task* (``image``, ``text`` …) is written into ``config.yaml`` when
the run is created and read back from there; it is never guessed from which
files exist, except for runs written before the field existed
(:func:`legacy_task`, the one place that infers it).

Bottom layer: imports only ``genforge.config`` and ``genforge.io``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; a run directory is then not locked
    fcntl = None  # type: ignore[assignment]

from genforge.config import ConfigError, load_yaml
from genforge.io import claim_new, remove_stale

CONFIG = "config.yaml"
WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"
STATE = "state.pt"
MANIFEST = "manifest.json"  # in each checkpoint: size and sha256 of every file, written last
TOKENIZER = "tokenizer.json"
METRICS_LOG = "metrics.jsonl"
LOG_BOOKKEEPING = frozenset({"step", "time", "eval_s", "elapsed_s"})  # metrics.jsonl keys that are no metric
TB_DIR = "tb"
SAMPLES_DIR = "samples"
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
BEST_JSON = "best.json"
EVAL_JSON = "eval.json"
EVAL_MD = "eval.md"
LOCK = ".lock"  # held (flock) by the process training into the run; records its pid, host and start
SAMPLES_STEM = "samples"
SAMPLE_SUFFIX = {"image": ".png", "text": ".txt"}  # the file type each task writes its samples as
TRIALS_DIR = "trials"  # in a study folder (``genforge tune``): one run directory per trial


PARENTS = "parents"  # config.yaml: role → {path, sha256} of each run this one stands on


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (exists, missing, not a run, unreadable config, in use)."""


def weights_sha256(path: str | Path) -> str:
    """sha256 of a weights file, hex (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Parent:
    """A run another run stands on: its ``role`` for the child (``autoencoder``, ``text_encoder``, ``base``),
    where it is and the sha256 of the weights the child was trained with."""

    role: str
    path: Path
    sha256: str

    def record(self) -> dict[str, str]:
        return {"path": str(self.path), "sha256": self.sha256}


def resolve_parents(spec: Any, base: str | Path = ".") -> dict[str, dict[str, str]]:
    """A recipe's ``parents`` (role → run directory, or ``{path, sha256}`` as recorded) → role →
    ``{path (absolute), sha256 of its weights now}``; a recorded sha256 that no longer matches is refused."""
    if not isinstance(spec, dict):
        raise ConfigError(f"parents must map a role to a run directory, got {spec!r}", key=PARENTS)
    out = {}
    for role, value in spec.items():
        given = value if isinstance(value, dict) else {"path": value}
        if not isinstance(given.get("path"), str) or not given["path"] or set(given) - {"path", "sha256"}:
            raise ConfigError(f"parents.{role} must be a run directory (or {{path, sha256}}), got {value!r}",
                              key=f"{PARENTS}.{role}")
        path = (Path(base) / Path(given["path"]).expanduser()).resolve()
        parent = Parent(str(role), path, str(given.get("sha256", "")))
        out[str(role)] = Parent(parent.role, path, check_parent(parent, f"parents.{role}")).record()
    return out


def check_parent(parent: Parent, child: str) -> str:
    """The sha256 of ``parent``'s weights now; a missing run or changed weights is a :class:`RunDirError`."""
    run = RunDir(parent.path)
    if not run.is_run():
        missing = run.config.name if not run.config.is_file() else run.weights.name
        raise RunDirError(f"{child} stands on the run {parent.role!r} at {parent.path}, which is missing or not a "
                          f"run ({missing} not found); restore it there or retrain")
    now = weights_sha256(run.weights)
    if parent.sha256 and now != parent.sha256:
        raise RunDirError(f"{child} stands on the run {parent.role!r} at {parent.path}, whose weights changed "
                          f"(sha256 {now[:12]}…, recorded {parent.sha256[:12]}…); restore them or retrain")
    return now


# What a run that never wrote a checkpoint leaves behind: nothing trained (the weights are those of step 0).
RESTARTABLE = frozenset({CONFIG, WEIGHTS, TOKENIZER, METRICS_LOG, TB_DIR, SAMPLES_DIR, CHECKPOINTS_DIR, LOCK,
                         *(f"{SAMPLES_STEM}{s}" for s in SAMPLE_SUFFIX.values())})


def study_trials(path: str | Path) -> list[Path] | None:
    """The trial run directories of a study folder (``genforge tune --out``), by name; None when ``path`` is a
    run directory itself or has no ``trials/`` folder."""
    path = Path(path)
    trials = path / TRIALS_DIR
    if (path / CONFIG).is_file() or not trials.is_dir():
        return None
    return sorted(p for p in trials.iterdir() if p.is_dir() and (p / CONFIG).is_file())


# What each command other than ``train`` owns inside a run directory: it writes there only into these (paths
# relative to the run), and refuses every other path inside a run with one line. ``compare`` owns nothing
# inside a run (its default folder, the runs' common parent, may still be one: it is chosen, not given).
OWNED = {"sample": "samples/sample-*.png|.jpg|.jpeg|.webp|.txt",
         "inpaint": "samples/inpaint-* (a file or a folder)", "upscale": "samples/upscale-* (a file or a folder)",
         "interpolate": "samples/interpolate-*.png", "eval": "eval.json, eval.md",
         "export": "export-onnx/, export-hf/ (the folder as a whole)", "compare": "nothing", "synth": "nothing"}
_SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".txt")
# Folders no output goes into (the filesystem root itself is refused too, and a file directly in it).
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/sbin", "/sys", "/usr")


def _owns(command: str, parts: tuple[str, ...]) -> bool:
    """Whether ``command`` may write the path ``parts`` (relative to a run directory)."""
    if command == "sample":
        return (len(parts) == 2 and parts[0] == SAMPLES_DIR and parts[1].startswith("sample-")
                and parts[1].lower().endswith(_SAMPLE_SUFFIXES))
    if command in ("inpaint", "upscale", "interpolate"):
        return len(parts) >= 2 and parts[0] == SAMPLES_DIR and parts[1].startswith(f"{command}-")
    if command == "eval":
        return parts in ((EVAL_JSON,), (EVAL_MD,))
    if command == "export":
        return bool(parts) and parts[0] in ("export-onnx", "export-hf")
    return False


def enclosing_run(path: str | Path) -> Path | None:
    """The outermost run directory (``config.yaml`` beside weights, a log, checkpoints or a lock) that
    ``path`` is or lies in; None outside every run."""
    path = Path(path).absolute()
    found = None
    for folder in (path, *path.parents):
        if (folder / CONFIG).is_file() and any((folder / n).exists() for n in (WEIGHTS, METRICS_LOG,
                                                                                CHECKPOINTS_DIR, LOCK)):
            found = folder
    return found


def check_location(path: str | Path, *, command: str, what: str = "output", folder: bool = False,
                   chosen: bool = False) -> Path:
    """Refuse an empty output, the filesystem root or a system folder (and a file directly in the root), and
    a path inside a run directory that ``command`` does not own (:data:`OWNED`; not checked for a ``chosen``
    default such as compare's common parent of the runs). Leftovers of a killed earlier
    write of this output (:func:`genforge.io.remove_stale`) are removed and named. Returns the path."""
    if not str(path).strip():
        raise RunDirError(f"{what} is empty; give a file or folder name (an empty name would mean the "
                          f"current directory)")
    path = Path(path)
    real = path.expanduser().resolve()
    root = Path(real.anchor)
    if real == root or (not folder and real.parent == root) or any(
            real == Path(d) or Path(d) in real.parents for d in SYSTEM_DIRS):
        raise RunDirError(f"refusing to write {what} {path}: it is the filesystem root or a system folder "
                          f"({real}); choose another output")
    run = None if chosen else enclosing_run(path)
    if run is not None:
        parts = path.absolute().relative_to(run).parts
        if not _owns(command, parts):
            owned = OWNED.get(command, "nothing")
            raise RunDirError(f"refusing to write {what} {path}: it lies inside the run {run}, where {command} "
                              f"writes {'nothing' if owned == 'nothing' else 'only ' + owned}; choose another output")
    remove_stale(path.absolute().parent, path.name)
    return path


def check_output(path: str | Path, *, overwrite: bool = False, what: str = "output", command: str = "sample",
                 chosen: bool = False) -> Path:
    """Refuse an output file that would damage something (:func:`check_location`; the default rule is that of
    ``genforge sample``, whose writers call this), a folder, an existing file (unless ``overwrite``), or a
    parent that is a file. Without ``overwrite`` the file is published only if still absent then
    (:func:`genforge.io.claim_new`). Returns the path."""
    path = check_location(path, command=command, what=what, chosen=chosen)
    if path.is_dir():
        raise RunDirError(f"{what} {path} is a folder; give a file name")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunDirError(f"cannot write {what} {path}: {parent} is a file, not a folder")
            break
    if path.exists() and not overwrite:
        raise RunDirError(f"{what} {path} already exists; pass --overwrite to replace it (nothing was changed)")
    claim_new(path, not overwrite)  # published create-exclusive: a file another writer puts there meanwhile is kept
    return path


class RunLock:
    """An exclusive OS lock (``flock``) on a run directory, held for the life of one training process.

    Creating the directory and taking the lock come first; every check of what the
    directory holds happens under the lock, so two processes started at the same
    instant can never both write one run. The lock file stays (an unlinked lock file
    could let a third process lock a new inode while a second still holds the old);
    it records the owner, which a refused process reports.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def owner(self) -> str:
        """What the lock file says about its holder (empty when unreadable)."""
        try:
            return (self.path / LOCK).read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    def acquire(self) -> RunLock:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise RunDirError(f"cannot create run directory {self.path}: a file is in the way") from None
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = self.owner() or "another process"
                raise RunDirError(f"run directory {self.path} is in use: {holder} is training into it; "
                                  f"wait for it to finish or stop it first (nothing was changed)") from None
        started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def legacy_task(path: Path) -> str:
    """The task of a run written before ``config.yaml`` recorded it: text runs were the ones with a tokenizer."""
    return "text" if (path / TOKENIZER).is_file() else "image"


# Before runs recorded their task, one ``sample`` section served both modalities and
# config.yaml held every key; these belong to the other task and are dropped on upgrade.
_LEGACY_SAMPLE_KEYS = {"image": ("prompt", "max_new_tokens", "temperature", "top_k", "top_p"),
                       "text": ("nrow", "batch_size")}


def upgrade_config(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """A run's raw config in today's format: old runs get their ``task`` and lose the other task's sample keys."""
    if "task" in raw:
        return raw
    task = legacy_task(path)
    sample = raw.get("sample")
    if isinstance(sample, dict):
        sample = {k: v for k, v in sample.items() if k not in _LEGACY_SAMPLE_KEYS[task]}
    return {**raw, "task": task, **({"sample": sample} if sample is not None else {})}


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run (or model) directory; nothing is read until asked.

    ``RunDir(path).best`` is itself a model directory with the same names.
    """

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    # ---- files and folders
    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS

    @property
    def tokenizer(self) -> Path:
        return self.path / TOKENIZER

    @property
    def metrics_log(self) -> Path:
        return self.path / METRICS_LOG

    @property
    def tb(self) -> Path:
        return self.path / TB_DIR

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def best(self) -> RunDir:
        return RunDir(self.path / BEST_DIR)

    @property
    def best_json(self) -> Path:
        return self.path / BEST_DIR / BEST_JSON

    @property
    def eval_json(self) -> Path:
        return self.path / EVAL_JSON

    @property
    def eval_md(self) -> Path:
        return self.path / EVAL_MD

    def samples(self, task: str) -> Path:
        """The final samples file of a ``task`` run (``samples.png``, ``samples.txt``)."""
        return self.path / f"{SAMPLES_STEM}{SAMPLE_SUFFIX[task]}"

    def step_samples(self, step: int, task: str) -> Path:
        """The samples written at training ``step``."""
        return self.path / SAMPLES_DIR / f"step-{step:08d}{SAMPLE_SUFFIX[task]}"

    def sample_output(self, name: str) -> Path:
        """Where ``genforge sample`` writes a file named ``name`` by default."""
        return self.path / SAMPLES_DIR / name

    def existing_samples(self) -> Path | None:
        """The final samples file, whatever the task (compare shows it); None when there is none."""
        return next((p for p in (self.path / f"{SAMPLES_STEM}{s}" for s in SAMPLE_SUFFIX.values()) if p.is_file()),
                    None)

    # ---- content
    def is_run(self) -> bool:
        """Whether this directory holds a loadable model (config and weights)."""
        return self.config.is_file() and self.weights.is_file()

    def require(self, *, what: str = "a genforge run directory") -> RunDir:
        """Raise :class:`RunDirError` naming the first missing file; returns ``self``."""
        if not self.path.is_dir():
            raise RunDirError(f"{self.path} is not {what} (no such directory)")
        for p in (self.config, self.weights):
            if not p.is_file():
                raise RunDirError(f"{self.path} is not {what} ({p.name} is missing)")
        return self

    def read_config(self) -> dict[str, Any]:
        """``config.yaml`` as a mapping in today's format (safe YAML: no tags, nothing executed)."""
        try:
            return upgrade_config(load_yaml(self.config), self.path)
        except ConfigError as e:
            raise RunDirError(f"{self.path}: {e}") from None

    def task(self, raw: dict[str, Any] | None = None) -> str:
        """The task recorded in ``config.yaml`` (``raw``, when already read); old runs: :func:`legacy_task`."""
        raw = self.read_config() if raw is None else raw
        task = raw.get("task")
        if task is None:
            return legacy_task(self.path)
        if not isinstance(task, str) or task not in SAMPLE_SUFFIX:
            raise RunDirError(f"{self.config}: unknown task {task!r}; known tasks: {', '.join(SAMPLE_SUFFIX)}")
        return task

    def parents(self, raw: dict[str, Any] | None = None) -> list[Parent]:
        """The runs this one stands on, as recorded in ``config.yaml`` (relative paths are relative to this run)."""
        raw = self.read_config() if raw is None else raw
        spec = raw.get(PARENTS) or {}
        if not isinstance(spec, dict) or not all(isinstance(v, dict) for v in spec.values()):
            raise RunDirError(f"{self.config}: parents must map roles to {{path, sha256}}, got {spec!r}")
        return [Parent(str(role), (self.path / str(v.get("path", ""))).resolve(), str(v.get("sha256", "")))
                for role, v in spec.items()]

    def verify_chain(self, raw: dict[str, Any] | None = None, *, _seen: tuple[Path, ...] = ()) -> list[Parent]:
        """Check every run this one stands on, and theirs, once: each exists and holds the weights recorded
        (sha256). Returns this run's parents; refuses (:class:`RunDirError`, one line naming the parent)
        a missing or changed one, and a cycle."""
        here = self.path.resolve()
        if here in _seen:
            raise RunDirError(f"{self.path} stands on itself through {' → '.join(map(str, _seen))}")
        parents = self.parents(raw)
        for parent in parents:
            check_parent(parent, str(self.path))
            RunDir(parent.path).verify_chain(_seen=(*_seen, here))
        return parents

    def family(self, raw: dict[str, Any] | None = None) -> str:
        """The model family named in ``config.yaml`` (``""`` when absent)."""
        raw = self.read_config() if raw is None else raw
        section = raw.get("model")
        return str(section.get("family", "")) if isinstance(section, dict) else ""
