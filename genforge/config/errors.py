"""Config errors that carry the key they are about, and the one did-you-mean helper.

Bottom of the config layer: imports nothing from genforge.
"""

from __future__ import annotations

import difflib
import typing


class ConfigError(ValueError):
    """A config is invalid: unknown key, wrong type or out-of-range value.

    ``key`` is the dotted key it is about (``train.lr``, ``sample.temperature``) when one is known, as data:
    callers (the HTTP server's ``param``) read it here, never from the message.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key

    @property
    def field(self) -> str | None:
        """The last part of :attr:`key` (``sample.temperature`` → ``temperature``), without any ``[i]``."""
        return None if self.key is None else self.key.rsplit(".", 1)[-1].split("[", 1)[0]


class FieldError(ValueError):
    """An out-of-range value of one named field, raised by a dataclass's ``__post_init__``.

    The message is ``"<field> <problem>"``; :func:`from_dict` turns it into a :class:`ConfigError` whose
    ``key`` is the field under its section (``sample.steps``).
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field


def did_you_mean(name: str, choices: typing.Iterable[str], *, cutoff: float = 0.5, prefix: str = "") -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` to ``name`` (a unique prefix first), else ``""``.

    The one suggestion helper for config keys, sample options, dataset and recipe names and HTTP fields.
    """
    choices = [str(c) for c in choices]
    starts = [c for c in choices if name and c.startswith(name)]
    close = starts[:1] if len(starts) == 1 else difflib.get_close_matches(name, choices, n=1, cutoff=cutoff)
    return f"; did you mean {prefix + close[0]!r}?" if close else ""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
