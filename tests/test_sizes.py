"""Size limits kept by a test, not by hand: no file in ``genforge/`` over 450 lines, no function over 80.

An exception goes in ``ALLOWED`` with the reason it is one; none is needed today.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "genforge"
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 80
ALLOWED: dict[str, str] = {}  # "path/to/file.py" or "path/to/file.py::function" → why it may be longer


def sizes(source: str) -> list[tuple[str, int]]:
    """(qualified name, lines) of every function and method in ``source``, nested ones included."""
    out = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    out.append((name, child.end_lineno - child.lineno + 1))
                walk(child, name + ".")
            else:
                walk(child, prefix)

    walk(ast.parse(source), "")
    return out


FILES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_and_functions_stay_small(path):
    rel = path.relative_to(PACKAGE.parent).as_posix()
    source = path.read_text(encoding="utf-8")
    lines = len(source.splitlines())
    assert lines <= MAX_FILE_LINES or rel in ALLOWED, f"{rel} has {lines} lines (limit {MAX_FILE_LINES}): split it"
    for name, n in sizes(source):
        key = f"{rel}::{name}"
        assert n <= MAX_FUNCTION_LINES or key in ALLOWED, f"{key} has {n} lines (limit {MAX_FUNCTION_LINES})"


def test_the_checker_sees_long_and_nested_functions():
    body = "\n".join(f"        x{i} = {i}" for i in range(90))
    found = dict(sizes(f"def outer():\n    def inner():\n{body}\n    return inner\n"))
    assert found["outer.inner"] == 91 and found["outer"] == 93
    assert all(key.split("::")[0] in {p.relative_to(PACKAGE.parent).as_posix() for p in FILES} for key in ALLOWED)
