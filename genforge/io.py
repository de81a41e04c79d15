"""Small file-system helpers shared by every layer: atomic writes, staged folders, leftovers of killed writers,
and a waiting file lock.

A temporary is named ``.<target name>.<pid>_<random>.tmp`` beside its target, so the next start can tell the
leftovers of a killed writer (its pid no longer runs) from the work of one still running (:func:`remove_stale`).

Bottom layer: imports nothing from genforge.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

_STALE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)_[A-Za-z0-9_]+\.tmp$")


def _prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}_"


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder, renamed onto ``target`` on success.

    On an exception the temporary is removed and ``target`` is left untouched,
    so a crash mid-write never corrupts a file that existed before.
    """
    target = Path(target)
    fd, name = tempfile.mkstemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file ordinary permissions
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a new temporary folder beside ``target`` (absent, or an empty folder), renamed onto it on success:
    a multi-file output appears whole or not at all. On an exception the temporary folder is removed."""
    target = Path(target)
    target.absolute().parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".tmp", dir=target.absolute().parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if target.is_dir():
            target.rmdir()  # empty (an existing non-empty folder raises here, and nothing is replaced)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one owned by another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temporary_owner(name: str) -> int | None:
    """The pid in a temporary's name (``.NAME.PID_xxx.tmp``), or None for any other name."""
    m = _STALE.match(name)
    return int(m["pid"]) if m else None


def remove_stale(folder: str | Path, name: str | None = None, *, report: bool = True) -> list[Path]:
    """Remove the temporaries (files or folders) that killed writers left in ``folder`` — those of ``name`` only,
    when given — whose process no longer runs; each is named on stderr unless ``report`` is false."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in sorted(folder.iterdir()):
        m = _STALE.match(p.name)
        if not m or (name is not None and m["name"] != name) or pid_alive(int(m["pid"])) or p.is_symlink():
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
        if report:
            print(f"removed {p}: left by an interrupted write (process {m['pid']})", file=sys.stderr)
    return removed


@contextmanager
def file_lock(path: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``path`` for the block; a holder makes this wait, saying so in one
    line on stderr (``what`` names the work waited for). The lock file stays (see ``rundir.RunLock``)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"waiting for another process to finish writing {what} ({path})", file=sys.stderr)
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_copy(source: str | Path, target: str | Path) -> None:
    """Copy the file ``source`` to ``target`` atomically (``target`` is whole or untouched)."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
