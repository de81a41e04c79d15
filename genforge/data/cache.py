"""Where downloaded datasets live: ``$GENFORGE_CACHE`` or the platform's cache folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["default_cache_dir"]


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
