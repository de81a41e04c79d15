"""Chains of runs in one command: a recipe whose ``parents`` name *recipes* instead of run directories.

    parents:
      autoencoder: {recipe: emoji-autoencoder}          # optionally: set: ["train.max_minutes=5"]

``genforge train emoji-ldm --out RUN`` then trains each such parent first into ``RUN/parents/<role>``, on the
child's data (its recipe's ``data:`` section over the parent's, then the spec's ``set``; written to
``RUN/parents/<role>.yaml``; the same ``--data-dir``), and the child stands on it as if
``--set parents.<role>=RUN/parents/<role>`` had been given. A parent that finished is written
``RUN/parents/<role>.json`` (its recipe, steps, why it stopped, the sha256 of its weights); running the
same command again reuses it, continues a parent that was interrupted
from its newest checkpoint, and then trains (or, with checkpoints, is refused to restart) the child as any
run. ``--set parents.<role>=DIR`` still names an existing run instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from genforge.config import ConfigError, apply_overrides, load_yaml, recipe_path
from genforge.io import atomic_write_text
from genforge.rundir import PARENTS, RunDir, weights_sha256

__all__ = ["PARENTS_DIR", "parent_recipes", "train_parent_recipes"]

PARENTS_DIR = "parents"  # inside a child run: the runs its recipe trained for it
_KEYS = {"recipe", "set"}


def parent_recipes(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The roles of ``raw``'s ``parents`` given as ``{recipe: NAME, set: [KEY=VALUE, …]}`` (checked)."""
    out = {}
    for role, spec in (raw.get(PARENTS) or {}).items():
        if not isinstance(spec, dict) or "recipe" not in spec:
            continue
        unknown = sorted(set(spec) - _KEYS)
        if unknown or not isinstance(spec["recipe"], str) or not isinstance(spec.get("set", []), list):
            raise ConfigError(f"parents.{role} must be a run directory or {{recipe: NAME, set: [KEY=VALUE, …]}}, got "
                              f"{spec!r}", key=f"{PARENTS}.{role}")
        out[str(role)] = spec
    return out


def train_parent_recipes(raw: dict[str, Any], run_dir: Path, *, data_dir: str | Path | None,
                         cache_dir: str | Path | None, progress: bool | None, multi_process: bool) -> dict[str, Any]:
    """Train (or reuse, or continue) every parent ``raw`` names by recipe, inside ``run_dir``; returns ``raw``
    with those parents replaced by their run directories. Raises ``ConfigError`` under a multi-process launch
    (train the parents first there) and ``KeyboardInterrupt`` when a parent's training was interrupted."""
    from genforge.training.run import train

    recipes = parent_recipes(raw)
    if not recipes:
        return raw
    if multi_process:
        raise ConfigError(f"parents {sorted(recipes)} are recipes: under torchrun train them first and pass "
                          f"--set parents.ROLE=RUN_DIR", key=PARENTS)
    parents = dict(raw[PARENTS])
    for role, spec in recipes.items():
        path = run_dir / PARENTS_DIR / role
        done = run_dir / PARENTS_DIR / f"{role}.json"
        if done.is_file() and RunDir(path).is_run():
            print(f"chain: parents.{role} is {path} (trained earlier by {spec['recipe']!r})", flush=True)
        else:
            resume = RunDir(path).config.is_file()
            print(f"chain: {'continuing' if resume else 'training'} parents.{role} with the recipe {spec['recipe']!r} "
                  f"in {path}", flush=True)
            recipe = None
            if not resume:  # the parent's recipe on the child's data, then the spec's own settings
                recipe = run_dir / PARENTS_DIR / f"{role}.yaml"
                parent = load_yaml(recipe_path(spec["recipe"]))
                parent["data"] = {**(parent.get("data") or {}), **(raw.get("data") or {})}
                parent = apply_overrides(parent, [str(s) for s in spec.get("set", [])])
                recipe.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(recipe, yaml.safe_dump(parent, sort_keys=False, allow_unicode=True))
            outcome = train(config_file=recipe, data_dir=data_dir, out=path, resume=resume, cache_dir=cache_dir,
                            progress=progress)
            if outcome.result.stopped not in ("max_steps", "max_minutes"):
                raise KeyboardInterrupt(f"parents.{role} stopped ({outcome.result.stopped}) at step "
                                        f"{outcome.result.step}; run the same command again to continue it")
            atomic_write_text(done, json.dumps({"recipe": spec["recipe"], "set": spec.get("set", []),
                                                "steps": outcome.result.step, "stopped": outcome.result.stopped,
                                                "sha256": weights_sha256(RunDir(path).weights)}, indent=1))
        parents[role] = str(path)
    return {**raw, PARENTS: parents}
