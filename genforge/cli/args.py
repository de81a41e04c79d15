"""Argument types and helpers shared by the ``genforge`` subcommands."""

from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``genforge sample: error: argument --n: ... (see genforge sample -h)``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (0 and negatives are refused, never read as "default")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def finite_float(text: str) -> float:
    """An argparse type: a finite number (NaN and infinities are refused)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def family_flags(extra: list[str]) -> dict:
    """Flags the parser does not know, as sample options of the run's family: ``--steps 20 --sampler ddim``
    (or ``--steps=20``) → ``{"steps": 20, "sampler": "ddim"}``; a flag without a value is ``true``. Values
    are read as YAML scalars, as ``--set`` reads them; the family's options dataclass then checks them."""
    from genforge.config import ConfigError, parse_override

    out: dict = {}
    i = 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--") or len(token) < 3:
            raise ConfigError(f"unexpected argument {token!r}")
        name, eq, value = token[2:].partition("=")
        if not eq:
            nxt = extra[i + 1] if i + 1 < len(extra) else None
            if nxt is not None and not nxt.startswith("--"):
                value, i = nxt, i + 1
            else:
                value = "true"
        out[name.replace("-", "_")] = parse_override(f"x={value}")[1]
        i += 1
    return out


def section_overrides(overrides: list[str], section: str, command: str) -> dict:
    """The one reader of ``--set`` for commands that take a single section: ``--set sample.steps=20`` →
    ``{"steps": 20}``; a key of another section is refused naming the command and the section it takes."""
    from genforge.config import ConfigError, apply_overrides

    given = apply_overrides({}, overrides)
    other = sorted(set(given) - {section})
    if other:
        raise ConfigError(f"genforge {command} takes --set {section}.KEY=VALUE, got {other}", key=other[0])
    value = given.get(section, {})
    if not isinstance(value, dict):
        raise ConfigError(f"--set {section}=... must name a key: --set {section}.KEY=VALUE", key=section)
    return value
