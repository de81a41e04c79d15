"""The dependency direction of DESIGN.md, enforced on every module's imports (lazy ones too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "genforge"
BASE = {"config", "io", "rundir"}  # bottom helpers importable from anywhere
ALLOWED = {
    "config": set(),
    "io": set(),
    "rundir": {"config", "io"},
    "data": BASE,
    "models": BASE,
    "metrics": BASE,
    "sampling": BASE | {"models", "data"},
    "evaluation": BASE | {"models", "data", "metrics", "sampling"},
    "tasks": BASE | {"models", "data", "metrics", "sampling", "evaluation"},
    "training": BASE | {"models", "data", "metrics", "sampling", "evaluation", "tasks"},
    "serve": BASE | {"models", "data", "metrics", "sampling", "tasks"},
    "export": BASE | {"models", "data", "metrics", "sampling", "tasks"},
    "cli": BASE | {"models", "data", "metrics", "sampling", "evaluation", "tasks", "training", "serve", "export"},
}


def layer_of(module: str) -> str | None:
    """``genforge.training.trainer`` → ``training``; the bare package → None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "genforge" and len(parts) > 1 else None


def internal_imports(source: str, module: str) -> set[str]:
    """Every ``genforge.*`` module imported anywhere in ``source`` (absolute or relative)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("genforge")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == "genforge":
                found |= {f"genforge.{a.name}" for a in node.names}
            elif name.startswith("genforge."):
                found.add(name)
    return found


def violations(source: str, module: str) -> list[str]:
    own = layer_of(module)
    own = "cli" if own == "__main__" else own  # ``python -m genforge`` is the command line
    if own is None:
        return []
    bad = []
    for target in internal_imports(source, module):
        other = layer_of(target)
        if other is None or other == own or other not in ALLOWED:  # root package, same layer, or a name in it
            continue
        if other not in ALLOWED[own]:
            bad.append(f"{module} imports {target} ({own} may import only {sorted(ALLOWED[own]) or 'nothing'})")
    return bad


def all_modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def test_every_layer_is_known():
    for module, _ in all_modules():
        layer = layer_of(module)
        assert layer is None or layer in ALLOWED or layer == "__main__", f"{module} is in no layer of DESIGN.md"


@pytest.mark.parametrize("module,path", list(all_modules()), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_dependency_direction(module, path):
    assert violations(path.read_text(encoding="utf-8"), module) == []


def test_checker_catches_upward_imports():
    assert violations("from genforge.training.trainer import Trainer", "genforge.models.gan")
    assert violations("import genforge.cli", "genforge.data.registry")
    assert violations("from ..training import run", "genforge.models.vae")  # relative import
    assert violations("def f():\n    from genforge.sampling import images", "genforge.metrics.fid")  # lazy
    assert not violations("from genforge.models.base import GenerativeModel", "genforge.training.trainer")
    assert not violations("from genforge import __version__", "genforge.models.base")


def test_the_pieces_conditions_chains_decoder_and_routes_sit_in_their_layers():
    """Typed conditions and the one text decoder are models/ (every layer above may use them), the chain of
    parent runs is the base (rundir), the server's routes are serve/, and none of them reaches upward."""
    placed = {"genforge.models.conditions": "models", "genforge.models.decoding": "models",
              "genforge.rundir": None, "genforge.config.errors": "config", "genforge.config.files": "config",
              "genforge.serve.routes.images": "serve", "genforge.serve.routes.completions": "serve",
              "genforge.serve.routes.system": "serve", "genforge.serve.state": "serve"}
    modules = dict(all_modules())
    for module, layer in placed.items():
        assert module in modules, f"{module} is missing"
        own = layer_of(module)
        assert own == (layer or "rundir")
        assert violations(modules[module].read_text(encoding="utf-8"), module) == []
    for module in ("genforge.models.conditions", "genforge.models.decoding"):
        imported = internal_imports(modules[module].read_text(encoding="utf-8"), module)
        assert {layer_of(m) for m in imported} <= {"models", *BASE}, module
