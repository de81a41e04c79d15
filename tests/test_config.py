"""Strict configs: unknown keys (with suggestions), types, ranges, overrides, every recipe parses."""

from __future__ import annotations

import math

import pytest

from genforge.config import (ConfigError, DataConfig, TrainConfig, apply_overrides, from_dict, list_recipes,
                             load_yaml, lr_factor, parse_override, recipe_path, resolve_run_config, to_dict)
from genforge.models import config_class
from genforge.training.optim import lr_factor as optim_lr_factor


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.lrr'; did you mean 'train.lr'\?"):
        from_dict(TrainConfig, {"lrr": 1e-3}, prefix="train")


def test_unknown_section_suggests_closest():
    with pytest.raises(ConfigError, match=r"'trian'; did you mean 'train'"):
        resolve_run_config({"trian": {}, "model": {"family": "gan"}}, config_class)


@pytest.mark.parametrize("key,value,pattern", [
    ("max_steps", "many", r"train.max_steps: expected an integer, got str 'many'"),
    ("lr", "fast", r"train.lr: expected a number"),
    ("progress", "yes please", r"train.progress: expected true or false"),
    ("precision", "bf16", r"'bf16' is not one of .*did you mean 'bf16-mixed'"),
    ("betas", [0.5], r"train.betas: expected 2 values"),
])
def test_wrong_types_name_the_key(key, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        from_dict(TrainConfig, {key: value}, prefix="train")


@pytest.mark.parametrize("cls,key,value,pattern", [
    (TrainConfig, "lr", -1.0, r"invalid value: train.lr must be positive"),
    (TrainConfig, "ema_decay", 1.5, r"ema_decay must be in \[0, 1\)"),
    (TrainConfig, "device", "tpu", r"device must be"),
    (DataConfig, "channels", 2, r"channels must be 1, 3 or 4"),
    (DataConfig, "test_fraction", 0.0, r"test_fraction"),
])
def test_out_of_range_values(cls, key, value, pattern):
    prefix = "train" if cls is TrainConfig else "data"
    with pytest.raises(ConfigError, match=pattern):
        from_dict(cls, {key: value}, prefix=prefix)


def test_yaml_style_scientific_notation_is_a_float():
    # PyYAML reads "1e-3" (no dot) as a string; configs still take it as a number
    assert from_dict(TrainConfig, {"lr": "1e-3"}).lr == pytest.approx(1e-3)


def test_overrides_parse_and_nest():
    assert parse_override("train.lr=3e-4") == (["train", "lr"], "3e-4")
    assert parse_override("train.betas=[0.5, 0.9]") == (["train", "betas"], [0.5, 0.9])
    out = apply_overrides({"train": {"lr": 1.0}}, ["train.lr=0.5", "model.z_dim=8"])
    assert out == {"train": {"lr": 0.5}, "model": {"z_dim": 8}}
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("train.lr")


def test_round_trip_through_dict():
    cfg = from_dict(TrainConfig, {"lr": 0.01, "group_steps": {"discriminator": 2}, "betas": [0.5, 0.9]})
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg


def test_unknown_family_lists_choices():
    from genforge.models import FAMILIES

    with pytest.raises(ConfigError, match=rf"unknown model.family 'gann'; choose from {', '.join(sorted(FAMILIES))}"):
        resolve_run_config({"model": {"family": "gann"}}, config_class)


def test_unknown_recipe_suggests():
    with pytest.raises(ConfigError, match=r"unknown recipe 'mnist-dcgn'; did you mean 'mnist-dcgan'"):
        recipe_path("mnist-dcgn")


@pytest.mark.parametrize("name", sorted(list_recipes()))
def test_every_recipe_parses(name):
    from genforge.models import FAMILIES
    from genforge.training.run import resolve

    raw = load_yaml(recipe_path(name))
    cfg = resolve_run_config(raw, config_class)
    assert cfg.description, f"recipe {name} needs a description"
    assert cfg.model.family in FAMILIES
    family = FAMILIES[cfg.model.family]
    if family.parent_roles or cfg.parents:  # stands on a run the user names (--set parents.ROLE=RUN)
        from genforge.training.chain import parent_recipes

        chain = parent_recipes(raw)
        if chain:  # or on runs it trains first from shipped recipes (a chain)
            roles = set(family.parent_roles)
            assert roles <= set(chain) <= roles | set(family.optional_parent_roles)
            for spec in chain.values():
                assert resolve_run_config(load_yaml(recipe_path(spec["recipe"])), config_class).model.family
            return
        with pytest.raises(ConfigError, match="stands on parents"):
            resolve(raw)
        return
    full = resolve(raw)  # the task checks the data's kind and the sample section against the family's options
    assert full.task == type(cfg.model).task and full.sample


# --------------------------------------------------------------------------- the learning-rate schedule


def _trainer_lr_factor(step, max_steps, warmup_steps, schedule, min_lr_ratio):
    """The trainer's schedule as it was written before it moved here (genforge.training.optim)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        decay = 1.0 - progress
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def _evaluator_lr_factor(step, steps, warmup):
    """The evaluator classifiers' warm-up + cosine to 0, as it was written before it used lr_factor."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * t))


@pytest.mark.parametrize("steps,warmup", [(1, 1), (20, 1), (300, 15), (506, 25), (3750, 188), (5000, 250)])
def test_lr_factor_equals_the_evaluator_schedule_bit_for_bit(steps, warmup):
    for step in range(steps):  # training runs steps 0 .. steps - 1
        got = lr_factor(step, max_steps=steps, warmup_steps=warmup, schedule="cosine", min_lr_ratio=0.0)
        assert got == _evaluator_lr_factor(step, steps, warmup), step  # exact, not approx


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
@pytest.mark.parametrize("max_steps,warmup,ratio", [(110, 10, 0.1), (1000, 0, 0.0), (50, 50, 0.3), (7, 3, 1.0)])
def test_lr_factor_equals_the_trainer_schedule_bit_for_bit(schedule, max_steps, warmup, ratio):
    cfg = TrainConfig(max_steps=max_steps, warmup_steps=warmup, schedule=schedule, min_lr_ratio=ratio)
    for step in range(max_steps + 5):  # past max_steps too: the factor stays at its floor
        got = lr_factor(step, max_steps=max_steps, warmup_steps=warmup, schedule=schedule, min_lr_ratio=ratio)
        assert got == _trainer_lr_factor(step, max_steps, warmup, schedule, ratio), step
        assert optim_lr_factor(step, cfg) == got  # the trainer's entry point


def test_lr_factor_rejects_an_unknown_schedule():
    with pytest.raises(ValueError, match="schedule must be constant, cosine or linear, got 'step'"):
        lr_factor(5, max_steps=10, warmup_steps=0, schedule="step", min_lr_ratio=0.0)


# ---------------------------------------------------------------- bounded YAML (issue 24, finding 4)

def _alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text,pattern", [
    (_alias_bomb(), r"aliases expand to more than 100000 values"),
    ("model: " + "[" * 10_000 + "]" * 10_000 + "\n", r"nested deeper than 64 levels"),
    ("model: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "\n", r"nested deeper than 64 levels"),
    ("model: &m {family: *m}\n", r"recursive structure"),
])
def test_yaml_bombs_and_deep_nesting_are_refused_fast(tmp_path, text, pattern):
    import time

    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=pattern):
        load_yaml(path)
    assert time.perf_counter() - start < 5


def test_yaml_file_size_is_bounded_and_small_aliases_still_work(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("description: " + "x" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match=r"more than a config may hold"):
        load_yaml(path)
    path.write_text("base: &b {lr: 0.1}\ntrain:\n  <<: *b\n  max_steps: 3\n")
    assert load_yaml(path)["train"] == {"lr": 0.1, "max_steps": 3}


def test_override_values_are_bounded_too():
    with pytest.raises(ConfigError, match=r"override train.lr: nested deeper"):
        parse_override("train.lr=" + "[" * 5_000 + "]" * 5_000)
    assert parse_override("train.betas=[0.9, 0.95]") == (["train", "betas"], [0.9, 0.95])


def test_a_huge_value_is_cut_short_in_the_message():
    big = [[list(range(1000))] * 1000] * 1000  # shared lists: a billion numbers once printed
    with pytest.raises(ConfigError) as e:
        from_dict(TrainConfig, {"lr": big}, prefix="train")
    assert len(str(e.value)) < 300 and "train.lr" in str(e.value)
    with pytest.raises(ConfigError) as e:
        from_dict(TrainConfig, {"precision": "x" * 100_000}, prefix="train")
    assert len(str(e.value)) < 400
