"""YAML files, ``--set`` overrides and the shipped recipes.

Safe YAML only: no tags, nothing executed. ``--set section.key=value`` is parsed here and nowhere else.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from genforge.config.errors import ConfigError, did_you_mean


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping is a ``ConfigError``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
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
        value = yaml.safe_load(raw) if raw.strip() else ""
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
