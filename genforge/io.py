"""Small file-system helpers shared by every layer: atomic writes.

Bottom layer: imports nothing from genforge.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder, renamed onto ``target`` on success.

    On an exception the temporary is removed and ``target`` is left untouched,
    so a crash mid-write never corrupts a file that existed before.
    """
    target = Path(target)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
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


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_copy(source: str | Path, target: str | Path) -> None:
    """Copy the file ``source`` to ``target`` atomically (``target`` is whole or untouched)."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
