"""The one exception type of the data layer."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(RuntimeError):
    """Bad or missing input data: a file, URL or folder the user has to fix.

    The message always names the file/URL/folder at fault and says what to do
    (which files to put where, which setting to change). The CLI prints it as
    one line without a traceback.
    """
