"""Every ``--flag`` genforge's messages and help texts suggest exists: on a ``genforge`` subcommand, as a
family option flag (a field of a sample or inpaint options dataclass, given as ``--name`` to sample and the
application commands), or on the other tool the text names (torchrun, pip, tensorboard)."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import re
from pathlib import Path

import genforge.models as models
from genforge.cli import build_parser
from genforge.models.base import SampleOptions

PACKAGE = Path(__file__).resolve().parents[1] / "genforge"
OTHER_TOOLS = {"--nnodes": "torchrun", "--nproc": "torchrun (--nproc_per_node)", "--rdzv": "torchrun (--rdzv_*)",
               "--no-deps": "pip", "--logdir": "tensorboard", "--version": "genforge itself (top level)"}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")


def suggested_flags() -> dict[str, set[str]]:
    """Every --flag in a string literal of the package → the files that mention it."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for flag in FLAG.findall(node.value):
                    found.setdefault(flag, set()).add(path.relative_to(PACKAGE).as_posix())
    return found


def command_flags() -> set[str]:
    known: set[str] = set()
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for a in sub._actions:
                    known |= set(a.option_strings)
    return known


def family_option_flags() -> set[str]:
    """``--name`` for every field of every options dataclass the families declare (sample and inpaint)."""
    import genforge.models.latent_fit  # noqa: F401 - the inpaint options live beside the families
    import genforge.models.repaint  # noqa: F401

    def subclasses(cls: type) -> list[type]:
        return [cls, *(s for c in cls.__subclasses__() for s in subclasses(c))]

    assert models.FAMILIES
    return {"--" + f.name.replace("_", "-") for c in subclasses(SampleOptions) for f in dataclasses.fields(c)}


def test_every_flag_a_message_suggests_exists():
    known = command_flags() | family_option_flags() | set(OTHER_TOOLS)
    missing = {f: sorted(where) for f, where in suggested_flags().items() if f not in known}
    assert not missing, f"flags suggested but accepted by no command: {missing}"


def test_the_check_sees_a_flag_no_command_has():
    assert "--no-such-flag" not in command_flags() | family_option_flags()
    assert FLAG.findall("pass --no-verify or --set data.name=x") == ["--no-verify", "--set"]
