"""The protocol record and its compatibility rule."""

from __future__ import annotations

import dataclasses

import pytest

from genforge import __version__
from genforge.evaluation.protocol import (METRICS, EvalError, Protocol, comparable, format_value,
                                          incompatibilities)

BASE = Protocol(metric="fid", extractor="evaluator:mnist", extractor_sha256="a" * 64, feature_dim=128,
                n_generated=10_000, n_reference=10_000, reference_split="test", reference_subsample="shuffled",
                subsample_seed=0, reference_sha256="b" * 64, seed=0, dataset="mnist", image_size=28, channels=1,
                split_sizes={"train": 60_000, "test": 10_000}, params={})

CHANGES = {
    "metric": "kid",
    "extractor": "inception-v3-fid",
    "extractor_sha256": "c" * 64,
    "feature_dim": 2048,
    "n_generated": 2000,
    "n_reference": 5000,
    "reference_split": "train",
    "reference_subsample": "all",
    "subsample_seed": 1,
    "reference_sha256": "d" * 64,
    "seed": 7,
    "dataset": "fashion-mnist",
    "image_size": 32,
    "channels": 3,
    "tokenizer": "char/65/abc",
    "split_sizes": {"train": 50_000, "test": 10_000},
    "params": {"k": 5},
    "genforge_version": "9.9.9",
}


def test_equal_protocols_are_comparable_and_share_an_id():
    other = Protocol.from_dict(BASE.to_dict())
    assert comparable(BASE, other) and incompatibilities(BASE, other) == []
    assert other == BASE and other.id == BASE.id and len(BASE.id) == 12
    assert BASE.genforge_version == __version__


def test_every_field_is_part_of_the_rule():
    covered = {f.name for f in dataclasses.fields(Protocol)} - {"format"}
    assert covered == set(CHANGES)  # a new field must be added to this test
    for name, value in CHANGES.items():
        other = dataclasses.replace(BASE, **{name: value})
        reasons = incompatibilities(BASE, other)
        assert not comparable(BASE, other), name
        assert len(reasons) == 1 and reasons[0].startswith(name.split("_")[0]), (name, reasons)
        assert other.id != BASE.id


def test_reasons_name_the_field_and_both_values():
    other = dataclasses.replace(BASE, n_generated=2000, seed=3)
    assert incompatibilities(BASE, other) == ["n_generated: 10000 vs 2000", "seed: 0 vs 3"]
    a = dataclasses.replace(BASE, metric="kid", params={"subsets": 100, "subset_size": 1000})
    b = dataclasses.replace(a, params={"subsets": 100, "subset_size": 500})
    assert incompatibilities(a, b) == ["params.subset_size: 1000 vs 500"]
    c = dataclasses.replace(a, params={"subsets": 100})
    assert incompatibilities(a, c) == ["params.subset_size: 1000 vs (absent)"]
    sha = incompatibilities(BASE, dataclasses.replace(BASE, extractor_sha256="e" * 64))[0]
    assert sha == f"extractor_sha256: {'a' * 12}… vs {'e' * 12}…"


def test_dict_records_work_like_protocols():
    d = BASE.to_dict()
    assert comparable(d, BASE)
    d2 = dict(d, n_reference=1)
    assert incompatibilities(BASE, d2) == ["n_reference: 10000 vs 1"]
    missing = {k: v for k, v in d.items() if k != "tokenizer"}
    assert incompatibilities(d, missing) == ["tokenizer:  vs (absent)"]


def test_from_dict_is_strict():
    with pytest.raises(EvalError, match="unknown fields \\['extra'\\]"):
        Protocol.from_dict({**BASE.to_dict(), "extra": 1})
    with pytest.raises(EvalError, match="lacks 'metric'"):
        Protocol.from_dict({"dataset": "mnist"})


def test_summary_and_formatting():
    s = BASE.summary()
    assert "evaluator:mnist (128-d)" in s and "10000 gen" in s and "10000 test, shuffled seed 0" in s
    assert format_value("fid", 1.23456) == "1.235"
    assert format_value("kid", 0.5, 0.25) == "0.5 ± 0.25"
    assert format_value("fid", None) == "n/a"
    assert {METRICS[m].better for m in ("fid", "kid", "bpc", "self_bleu")} == {"lower"}
    assert {METRICS[m].better for m in ("precision", "recall", "coverage", "is", "bleu")} == {"higher"}
    assert METRICS["density"].better == ""  # 1 means "like the data": not ranked
