"""YAML files, ``--set`` overrides and the shipped recipes.

Safe YAML only: no tags, nothing executed, and bounded: a file of at most :data:`MAX_BYTES`, nested at most
:data:`MAX_DEPTH` levels, whose aliases expand to at most :data:`MAX_NODES` values (an "alias bomb" of nested
anchors is refused before anything is built from it). ``--set section.key=value`` is parsed here and nowhere else.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from genforge.config.errors import ConfigError, did_you_mean

MAX_BYTES = 1 << 20  # a recipe or a run's config.yaml is a few kB
MAX_DEPTH = 64  # nesting levels of sequences and mappings
MAX_NODES = 100_000  # values after expanding every alias


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses documents nested deeper than :data:`MAX_DEPTH` while composing
    (before Python's recursion limit is reached)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise ConfigError(f"nested deeper than {MAX_DEPTH} levels (at line {line})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """How many values ``node`` stands for once its aliases are expanded (shared nodes counted each time)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise ConfigError("an alias refers to the node that holds it (a recursive structure)")
    open_.add(key)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, open_)
        if total > MAX_NODES:
            raise ConfigError(f"its aliases expand to more than {MAX_NODES} values (an alias bomb?)")
    open_.discard(key)
    sizes[key] = total
    return total


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with the bounds of this module; a bound exceeded is a ``ConfigError``."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{len(text)} characters is more than a config may hold ({MAX_BYTES})")
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing, too large, too deep or invalid file or a non-mapping is a ``ConfigError``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.stat().st_size > MAX_BYTES:
        raise ConfigError(f"{path} is {path.stat().st_size} bytes, more than a config may hold ({MAX_BYTES})")
    try:
        data = safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte offset {e.start})") from None
    except ConfigError as e:
        raise ConfigError(f"{path} is refused: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def dump_yaml(data: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-3"`` → ``(["train", "lr"], 0.001)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key part")
    try:
        value = safe_load(raw) if raw.strip() else ""
    except ConfigError as e:
        raise ConfigError(f"override {key.strip()}: {e}") from None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of nested ``data`` with each ``a.b.c=value`` applied."""
    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {p!r} is not a section")
            node = child
        node[parts[-1]] = value
    return out


# --------------------------------------------------------------------------- recipes

RECIPES_DIR = Path(__file__).parent.parent / "recipes"
DEFAULT_RECIPE = "digits-dcgan"


def list_recipes() -> dict[str, str]:
    """Shipped recipe names → one-line descriptions."""
    out = {}
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        desc = str(load_yaml(path).get("description", "")).strip()
        out[path.stem] = desc.splitlines()[0] if desc else ""
    return out


def recipe_path(name: str) -> Path:
    """The YAML file of a shipped recipe; an unknown name suggests the closest one."""
    path = RECIPES_DIR / f"{name}.yaml"
    if path.is_file():
        return path
    names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    hint = did_you_mean(name, names, cutoff=0.6)
    raise ConfigError(f"unknown recipe {name!r}{hint} (available: {', '.join(names)}; "
                      f"or pass --config FILE for your own)")
