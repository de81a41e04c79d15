"""Nothing genforge reads can execute code, and broken or diverged weights are refused in one line.

The scan walks the AST of every module under ``genforge/`` and fails on any way
of loading that runs a pickle or YAML constructor: ``torch.load`` without
``weights_only=True``, ``pickle``/``cloudpickle``/``dill`` imports, ``yaml.load``
and the unsafe loaders, ``np.load(..., allow_pickle=True)``. Aliases
(``import torch as t``, ``from yaml import load``) are followed.
"""

from __future__ import annotations

import ast
import math
import shutil
from pathlib import Path

import pytest
import torch

from genforge.cli import main

PACKAGE = Path(__file__).resolve().parents[1] / "genforge"

PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "shelve", "joblib"}
UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all",
               "Loader", "UnsafeLoader", "FullLoader"}
TORCH_LOADS = {"torch.load", "torch.serialization.load"}
NUMPY_LOADS = {"numpy.load"}


class _Scanner(ast.NodeVisitor):
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.aliases: dict[str, str] = {}  # local name -> dotted name of what it refers to
        self.findings: list[str] = []

    def report(self, node: ast.AST, what: str) -> None:
        self.findings.append(f"{self.filename}:{getattr(node, 'lineno', 0)}: {what}")

    # ---- imports
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            root = a.name.split(".")[0]
            if root in PICKLE_MODULES:
                self.report(node, f"import {a.name}")
            self.aliases[a.asname or root] = a.name if a.asname else root
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if module.split(".")[0] in PICKLE_MODULES:
            self.report(node, f"from {module} import ...")
        for a in node.names:
            full = f"{module}.{a.name}"
            self.aliases[a.asname or a.name] = full
            if module == "yaml" and a.name in UNSAFE_YAML:
                self.report(node, f"from yaml import {a.name}")
        self.generic_visit(node)

    # ---- names
    def dotted(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = self.dotted(node)
        if name and name.startswith("yaml.") and name[5:] in UNSAFE_YAML:
            self.report(node, name)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = self.dotted(node.func)
        kw = {k.arg: k.value for k in node.keywords}
        if name in TORCH_LOADS:
            value = kw.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                self.report(node, f"{name} without weights_only=True")
        elif name in NUMPY_LOADS:
            value = kw.get("allow_pickle")
            if None in kw or (value is not None and not (isinstance(value, ast.Constant) and value.value is False)):
                self.report(node, f"{name} with allow_pickle")
        elif isinstance(node.func, ast.Name) and name and name.startswith("yaml.") and name[5:] in UNSAFE_YAML:
            self.report(node, name)  # from yaml import load; load(...) (attributes are reported above)
        self.generic_visit(node)


def scan(source: str, filename: str = "<string>") -> list[str]:
    """Every unsafe load in ``source``, as ``file:line: what``."""
    scanner = _Scanner(filename)
    scanner.visit(ast.parse(source, filename=filename))
    return scanner.findings


def test_no_module_loads_unsafely():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    findings = [f for p in files for f in scan(p.read_text(encoding="utf-8"), str(p.relative_to(PACKAGE.parent)))]
    assert findings == []


@pytest.mark.parametrize("source", [
    "import torch\ntorch.load(p)",
    "import torch\ntorch.load(p, weights_only=False)",
    "import torch\ntorch.load(p, map_location='cpu', weights_only=flag)",
    "import torch as T\nT.load(p)",
    "from torch import load\nload(p)",
    "from torch import load as tl\ntl(p, weights_only=False)",
    "import torch\ntorch.serialization.load(p)",
    "import torch\ntorch.load(p, **kwargs)",
    "import pickle",
    "import pickle as p",
    "from pickle import loads",
    "import cloudpickle",
    "import dill",
    "from _pickle import Unpickler",
    "def f():\n    import dill.settings",
    "import yaml\nyaml.load(s)",
    "import yaml\nyaml.load(s, Loader=yaml.SafeLoader)",
    "import yaml\nyaml.unsafe_load(s)",
    "import yaml\nyaml.safe_load(s, Loader=yaml.Loader)",
    "import yaml\nyaml.add_constructor('!x', f, Loader=yaml.UnsafeLoader)",
    "from yaml import load\nload(s)",
    "from yaml import UnsafeLoader",
    "import yaml as y\ny.full_load(s)",
    "import numpy as np\nnp.load(p, allow_pickle=True)",
    "import numpy\nnumpy.load(p, allow_pickle=True)",
    "import numpy as np\nnp.load(p, allow_pickle=flag)",
    "import numpy as np\nnp.load(p, **kw)",
])
def test_the_scan_catches_planted_examples(source):
    assert scan(source), source


@pytest.mark.parametrize("source", [
    "import torch\ntorch.load(p, map_location='cpu', weights_only=True)",
    "import yaml\nyaml.safe_load(s)\nyaml.safe_dump(d)\nyaml.YAMLError",
    "import numpy as np\nnp.load(p)\nnp.load(p, allow_pickle=False)",
    "import json\njson.load(f)",
    "from safetensors.torch import load_file, load\nload_file(p)\nload(b)",
    "def load(x):\n    return x\nload(1)",
    "model.load_state_dict(sd)",
    "s = 'import pickle; torch.load(p)'",
])
def test_the_scan_lets_safe_code_through(source):
    assert scan(source) == []


# ---------------------------------------------------------------------------- weights that cannot be used
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny-vae run (a few steps, one checkpoint)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    code = main(["train", "tiny-vae", "--out", str(run), "--no-progress", "--set", "train.max_steps=4",
                 "--set", "train.checkpoint_every=2", "--set", "train.sample_every=0",
                 "--set", "train.num_threads=1"])
    assert code == 0
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def load(path: Path):
    from genforge.models import load as load_model

    return load_model(path)


def _truncated(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:100])


@pytest.mark.parametrize("damage", {
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(bytes(range(256)) * 40),
    "truncated": _truncated,
}.items(), ids=lambda d: d[0])
def test_a_broken_weights_file_is_one_line_naming_it(run, damage, capsys):
    weights = run / "model.safetensors"
    damage[1](weights)
    with pytest.raises(ValueError) as info:
        load(run)
    msg = str(info.value)
    assert msg.startswith(f"{weights} is not a valid safetensors file (") and "\n" not in msg
    assert f"`genforge train --out {run} --resume` continues from the newest checkpoint" in msg

    code = main(["sample", str(run), "--n", "2", "-o", str(run.parent / "x.png")])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "is not a valid safetensors file" in err


def test_a_model_directory_without_checkpoints_gets_no_resume_advice(run):
    model_dir = run / "best-copy"
    model = load(run)
    model.save_pretrained(model_dir)
    (model_dir / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="is not a valid safetensors file") as info:
        load(model_dir)
    assert "--resume" not in str(info.value)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_refused(run, bad, capsys):
    from safetensors.torch import save_model

    model = load(run)
    state = model.state_dict()  # shares storage with the model
    names = [n for n, t in state.items() if t.is_floating_point()]
    state[names[1]].view(-1)[0] = bad
    state[names[3]].fill_(bad)
    save_model(model, str(run / "model.safetensors"))
    with pytest.raises(ValueError) as info:
        load(run)
    assert str(info.value) == (f"{run / 'model.safetensors'} holds non-finite weights in 2 of {len(names)} tensors "
                               f"(first: {names[1]}); the run diverged — resume from an earlier checkpoint")


def test_finite_weights_load(run):
    model = load(run)
    assert not model.training


def test_weights_of_another_shape_are_still_refused(run):
    from safetensors.torch import load_file, save_file

    tensors = load_file(run / "model.safetensors")
    name = next(iter(tensors))
    tensors[name] = torch.zeros(*[s + 1 for s in tensors[name].shape])
    save_file(tensors, run / "model.safetensors")
    with pytest.raises(ValueError, match="does not match this vae model"):
        load(run)
    del tensors[name]
    save_file(tensors, run / "model.safetensors")
    with pytest.raises(ValueError, match=rf"does not match this vae model: missing \['{name}'\]"):
        load(run)
