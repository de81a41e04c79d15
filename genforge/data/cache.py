"""Where downloaded datasets live: ``$GENFORGE_CACHE`` or the platform's cache folder."""

from __future__ import annotations

from genforge.io import default_cache_dir

__all__ = ["default_cache_dir"]
