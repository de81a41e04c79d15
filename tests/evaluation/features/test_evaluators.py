"""Evaluator classifiers: shipped assets, sha256 checks, deterministic builds, on-demand caching."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from genforge.config import DataConfig
from genforge.data import load_images
from genforge.evaluation.features import (
    ClassifierConfig,
    EvaluatorClassifier,
    EvaluatorError,
    build_evaluator,
    evaluator_for,
    load_evaluator,
)
from genforge.evaluation.features import evaluator_training as training
from genforge.evaluation.features import evaluators as ev

SHIPPED = ("digits", "mnist")
INDEX = json.loads((ev.ASSETS_DIR / ev.INDEX_FILE).read_text(encoding="utf-8"))["evaluators"]


def _same_build_environment(entry: dict) -> bool:
    """Bit-identical rebuilds are promised for the same torch build on the same CPU instruction set."""
    return (entry["torch_version"] == torch.__version__
            and entry["cpu_capability"] == torch.backends.cpu.get_cpu_capability())


# --------------------------------------------------------------------------- shipped assets


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_asset_exists_is_small_and_matches_the_index(name):
    entry = INDEX[name]
    path = ev.ASSETS_DIR / entry["file"]
    blob = path.read_bytes()
    assert len(blob) <= 2_000_000 and len(blob) == entry["bytes"]
    assert hashlib.sha256(blob).hexdigest() == entry["sha256"]
    for key in ("dataset", "sha256", "parameters", "feature_dim", "test_accuracy", "training", "genforge_version",
                "torch_version", "network"):
        assert key in entry, key
    assert entry["dataset"] == name and entry["id"] == f"evaluator:{name}"
    net = EvaluatorClassifier(ClassifierConfig(**entry["network"]))
    assert net.num_parameters == entry["parameters"] == sum(t.numel() for t in load_file(str(path)).values())
    assert all(t.dtype == torch.float32 for t in load_file(str(path)).values())

    loaded, info = load_evaluator(name)
    assert not loaded.training and info.source == "shipped"
    assert (info.id, info.sha256, info.feature_dim) == (f"evaluator:{name}", entry["sha256"], 128)
    assert info.test_accuracy == entry["test_accuracy"] >= (0.995 if name == "mnist" else 0.95)
    assert load_evaluator(f"evaluator:{name}")[1] == info


def test_shipped_digits_features_are_pre_activation_with_a_full_rank_covariance():
    net, info = load_evaluator("digits")
    data = load_images(DataConfig(name="digits"))
    x = torch.cat([data.train_x, data.test_x])                                 # (1797, 1, 8, 8)
    logits, features = net.extract(x)
    assert features.shape == (1797, info.feature_dim) and logits.shape == (1797, 10)
    assert (features < 0).float().mean() > 0.1  # taken before the ReLU
    train_var = features[:len(data.train_x)].double().var(0).mean().item()
    assert train_var == pytest.approx(1.0, rel=1e-3)  # rescaled to unit mean variance at build time
    eig = torch.linalg.eigvalsh(torch.cov(features.double().T))
    assert eig.min() > 1e-6 * eig.max()  # non-singular: FID's matrix square root is well defined
    acc = (logits[-len(data.test_y):].argmax(1) == data.test_y).double().mean().item()
    assert acc == pytest.approx(info.test_accuracy, abs=1 / 180 + 1e-9)


def test_shipped_mnist_evaluator_is_99_5_percent_accurate_on_real_mnist(mnist_dir):
    net, info = load_evaluator("mnist")
    data = load_images(DataConfig(name="mnist", data_dir=str(mnist_dir)))
    acc = training.accuracy(net, data.test_x, data.test_y)
    assert acc >= 0.995
    assert acc == pytest.approx(info.test_accuracy, abs=5e-4)  # the number in index.json is real


# --------------------------------------------------------------------------- verification and errors


@pytest.fixture
def asset_copy(tmp_path, monkeypatch):
    """A private copy of the shipped assets, used in place of the real folder."""
    folder = tmp_path / "assets"
    shutil.copytree(ev.ASSETS_DIR, folder)
    monkeypatch.setattr(ev, "ASSETS_DIR", folder)
    return folder


def test_a_tampered_weights_file_is_refused(asset_copy, tmp_path):
    path = asset_copy / "digits.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(blob))
    with pytest.raises(EvaluatorError, match=r"sha256 .* expects .*modified; reinstall genforge"):
        load_evaluator("digits", cache_dir=tmp_path / "cache")
    (asset_copy / "digits.safetensors").unlink()
    with pytest.raises(EvaluatorError, match="is missing"):
        load_evaluator("digits", cache_dir=tmp_path / "cache")


def test_a_dataset_without_an_evaluator_names_the_build_command(tmp_path):
    hint = r"'fashion-mnist'.*genforge evaluators build fashion-mnist --data-dir DIR"
    with pytest.raises(EvaluatorError, match=hint):
        load_evaluator("fashion-mnist", cache_dir=tmp_path)
    with pytest.raises(EvaluatorError, match=r"no evaluator named 'nope'.*known: .*digits"):
        load_evaluator("nope", cache_dir=tmp_path)
    with pytest.raises(EvaluatorError, match="built-in labelled datasets are digits, mnist, fashion-mnist"):
        build_evaluator("imagefolder:/x", cache_dir=tmp_path)


def test_a_built_in_dataset_uses_its_shipped_evaluator_at_any_run_size(tmp_path):
    cfg = DataConfig(name="digits", image_size=16)
    data = load_images(cfg)
    net, info = evaluator_for(data, cfg, cache_dir=tmp_path)
    assert info.id == "evaluator:digits" and info.image_size == 8  # the caller resizes to info.image_size


# --------------------------------------------------------------------------- deterministic builds


def test_build_is_bit_identical_and_found_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "ASSETS_DIR", tmp_path / "no-assets")  # so the cache is what load_evaluator finds
    quick = replace(ev.PRESETS["digits"], min_steps=20, max_steps=20)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    a = build_evaluator("digits", out=tmp_path / "a", config=quick, progress=False)
    b = build_evaluator("digits", out=tmp_path / "b", config=quick, progress=False)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, deterministic)
    assert a.sha256 == b.sha256 and a.path.read_bytes() == b.path.read_bytes()
    other = build_evaluator("digits", out=tmp_path / "c", config=replace(quick, seed=1), progress=False)
    assert other.sha256 != a.sha256  # the seed matters, so equality above is not vacuous

    info = build_evaluator("digits", cache_dir=tmp_path / "cache", config=quick, progress=False)  # default out
    assert info.source == "cache" and info.path == tmp_path / "cache" / "evaluators" / "digits.safetensors"
    assert load_evaluator("digits", cache_dir=tmp_path / "cache")[1] == info


@pytest.mark.slow
def test_rebuilding_digits_reproduces_the_shipped_weights(tmp_path):
    entry = INDEX["digits"]
    if not _same_build_environment(entry):
        pytest.skip(f"shipped digits weights were built with torch {entry['torch_version']} on "
                    f"{entry['cpu_capability']}; bit-identity is only promised for the same build environment")
    info = build_evaluator("digits", out=tmp_path, progress=False)
    shipped = load_file(str(ev.ASSETS_DIR / entry["file"]))
    rebuilt = load_file(str(info.path))
    assert shipped.keys() == rebuilt.keys()
    assert all(torch.equal(shipped[k], rebuilt[k]) for k in shipped)
    assert info.sha256 == entry["sha256"] and info.test_accuracy == entry["test_accuracy"]


# --------------------------------------------------------------------------- image folders


def _write_folder(root: Path, labelled: bool = True, per_class: int = 12) -> None:
    """Three classes of 16×16 RGB images: a coloured bar at one of three heights, on noise."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(["circle", "square", "triangle"]):
        folder = root / name if labelled else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 80, (16, 16, 3), dtype=np.uint8)
            a[2 + 5 * k:5 + 5 * k, 2:14, k] = 255
            Image.fromarray(a).save(folder / f"{name}_{i}.png")


def test_imagefolder_evaluator_is_trained_once_then_loaded_from_the_cache(tmp_path, monkeypatch):
    root = tmp_path / "shapes"
    _write_folder(root)
    cfg = DataConfig(name=f"imagefolder:{root}", test_fraction=0.25)
    data = load_images(cfg)
    cache = tmp_path / "cache"
    net, info = evaluator_for(data, cfg, cache_dir=cache)
    assert info.id.startswith("evaluator:imagefolder-") and info.source == "cache"
    assert (info.channels, info.image_size, info.num_classes) == (3, 16, 3)
    assert info.test_accuracy >= 0.85  # the bars are easy to tell apart
    entry = json.loads((cache / "evaluators" / "index.json").read_text())["evaluators"][info.id.split(":")[1]]
    assert entry["training"]["steps"] == ev.EvaluatorTrainConfig().min_steps  # small data: the step floor
    logits, features = net.extract(data.test_x)
    assert logits.shape == (len(data.test_x), 3) and features.shape == (len(data.test_x), 128)

    def no_training(*args, **kwargs):
        raise AssertionError("the second call must load the cached evaluator, not train")

    monkeypatch.setattr(ev, "train_evaluator", no_training)
    net2, info2 = evaluator_for(load_images(cfg), cfg, cache_dir=cache)
    assert info2 == info
    assert all(torch.equal(p, q) for p, q in zip(net.state_dict().values(), net2.state_dict().values()))

    changed = replace(data, train_y=data.train_y.roll(1))  # other labels → another key → would train again
    with pytest.raises(AssertionError, match="must load the cached"):
        evaluator_for(changed, cfg, cache_dir=cache)


def test_unlabelled_data_says_features_need_labels(tmp_path):
    root = tmp_path / "flat"
    _write_folder(root, labelled=False, per_class=2)
    cfg = DataConfig(name=f"imagefolder:{root}")
    hint = r"no labels: classifier features need labelled data.*--features inception"
    with pytest.raises(EvaluatorError, match=hint):
        evaluator_for(load_images(cfg), cfg, cache_dir=tmp_path / "cache")


# --------------------------------------------------------------------------- recipe pieces


def test_steps_scale_with_the_data_between_the_bounds():
    cfg = ev.EvaluatorTrainConfig(epochs=5.0, batch_size=128, min_steps=300, max_steps=5000)
    assert cfg.steps_for(60_000) == 2344 and cfg.steps_for(30) == 300 and cfg.steps_for(10**7) == 5000
    assert [cfg.shift_for(s) for s in (8, 16, 28, 32, 64)] == [0, 1, 2, 2, 4]
    with pytest.raises(ValueError, match="min_steps"):
        ev.EvaluatorTrainConfig(min_steps=10, max_steps=5)


def test_random_shift_moves_each_image_by_its_own_offset_with_edge_replication():
    x = torch.zeros(64, 1, 9, 9, dtype=torch.uint8)
    x[:, :, 4, 4] = 255
    y = training._random_shift(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert (y.flatten(1).sum(1) == 255).all()  # the dot moved, nothing else appeared
    pos = y[:, 0].flatten(1).argmax(1)
    dy, dx = pos // 9 - 4, pos % 9 - 4
    assert dy.abs().max() <= 2 and dx.abs().max() <= 2 and len(set(zip(dy.tolist(), dx.tolist()))) > 10
    edge = torch.arange(9, dtype=torch.uint8).view(1, 1, 1, 9).expand(8, 1, 9, 9)
    shifted = training._random_shift(edge, 3, torch.Generator().manual_seed(1))
    assert shifted.min() == 0 and shifted.max() == 8  # edge values repeat instead of zero fill
    assert torch.equal(training._random_shift(x, 0, torch.Generator()), x)


def test_a_built_in_dataset_without_an_evaluator_gets_one_trained_and_cached(tmp_path, monkeypatch, capsys):
    """eval never stops for want of an evaluator it can build: the preset recipe trains one into the cache
    (saying so), and the next call only loads it."""
    from genforge.evaluation.features.evaluators import EvaluatorError, evaluator_for

    shipped = ev.load_evaluator

    def no_shipped_digits(name, *, cache_dir=None):
        if name == "digits" and not (Path(cache_dir) / "evaluators" / "index.json").is_file():
            raise EvaluatorError("no evaluator for 'digits' (simulated: not shipped)")
        return shipped(name, cache_dir=cache_dir)

    monkeypatch.setattr(ev, "load_evaluator", no_shipped_digits)
    monkeypatch.setitem(ev.PRESETS, "digits", training.EvaluatorTrainConfig(min_steps=20, max_steps=20))
    cfg = DataConfig(name="digits")
    data = load_images(cfg)
    net, info = evaluator_for(data, cfg, cache_dir=tmp_path)
    assert "no evaluator for digits yet: training one" in capsys.readouterr().err
    assert info.dataset == "digits" and 0 <= info.test_accuracy <= 1
    assert (tmp_path / "evaluators" / "index.json").is_file()
    _, again = evaluator_for(data, cfg, cache_dir=tmp_path)
    assert again.sha256 == info.sha256 and "training one" not in capsys.readouterr().err
