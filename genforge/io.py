"""Small file-system helpers shared by every layer: atomic writes, staged folders, leftovers of killed writers,
and a waiting file lock.

A temporary is named ``.<target name>.<pid>_<random>.tmp`` beside its target, so the next start can tell the
leftovers of a killed writer (its pid no longer runs) from the work of one still running (:func:`remove_stale`).

Bottom layer: imports nothing from genforge.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

_STALE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)_[A-Za-z0-9_]+\.tmp$")
# Outputs a command found absent at its start (``rundir.check_output`` without --overwrite): they are published
# create-exclusive (:func:`publish`), so a writer that got there first in the meantime is never replaced.
_MUST_BE_NEW: dict[str, set[int]] = {}  # absolute path → the threads of this process that claimed it


def claim_new(target: str | Path, new: bool = True) -> None:
    """Mark ``target`` as an output of this thread that must not exist when published (another writer's file
    is kept); ``new=False`` drops such a mark (an output given with --overwrite, or one no longer written)."""
    key, me = os.path.abspath(target), threading.get_ident()
    if new:
        _MUST_BE_NEW.setdefault(key, set()).add(me)
    elif me in _MUST_BE_NEW.get(key, ()):
        _MUST_BE_NEW[key].discard(me)
        if not _MUST_BE_NEW[key]:
            del _MUST_BE_NEW[key]


def publish(tmp: str | Path, target: str | Path) -> None:
    """Rename the finished temporary ``tmp`` onto ``target``: replacing it, or, for a :func:`claim_new` target,
    only if it is still absent (``os.link`` + unlink, which fails atomically on an existing name; a folder is
    renamed, which fails onto a non-empty one). A target another process wrote first is a FileExistsError
    (one line) and stays whole."""
    taken = FileExistsError(f"{target} was written by another process while this one ran; it was kept and "
                            f"nothing was replaced")
    try:
        if threading.get_ident() in _MUST_BE_NEW.get(os.path.abspath(target), ()) and not os.path.isdir(tmp):
            _link_new(tmp, target)
        else:
            os.replace(tmp, target)
    except FileExistsError:
        raise taken from None
    except OSError as e:
        if os.path.isdir(tmp) and os.path.isdir(target) and e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise taken from None
        raise
    finally:
        claim_new(target, False)


def _link_new(tmp: str | Path, target: str | Path) -> None:
    """``tmp`` under the new name ``target`` (FileExistsError when taken), then ``tmp`` gone."""
    try:
        os.link(tmp, target)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(target):  # a file system without hard links: check, then rename (a narrow window)
            raise FileExistsError(target) from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


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
        publish(tmp, target)
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
        if target.is_dir() and not any(target.iterdir()):
            try:
                target.rmdir()  # empty; onto a non-empty folder (another writer's) the rename fails, replacing
            except OSError:     # nothing
                pass
        publish(tmp, target)
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


def default_cache_dir() -> Path:
    """The folder holding ``<dataset>/`` sub-folders of downloaded files.

    ``$GENFORGE_CACHE`` when set; otherwise ``~/Library/Caches/genforge`` on
    macOS, ``%LOCALAPPDATA%\\genforge\\cache`` on Windows, and
    ``$XDG_CACHE_HOME/genforge`` (default ``~/.cache/genforge``) elsewhere.
    The folder is not created here.
    """
    env = os.environ.get("GENFORGE_CACHE")
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "genforge"
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        return (Path(local) if local else home / "AppData" / "Local") / "genforge" / "cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".cache"  # XDG: relative paths are invalid
    return base / "genforge"


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_copy(source: str | Path, target: str | Path) -> None:
    """Copy the file ``source`` to ``target`` atomically (``target`` is whole or untouched)."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
