"""Registry dispatch, listing, the cache location and ``ImageData``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genforge.config import DataConfig
from genforge.data import DATASETS, TEXT_DATASETS, DataError, ImageData, default_cache_dir, list_datasets, load_images
from genforge import io as io_module


def test_unknown_name_suggests_the_closest():
    with pytest.raises(DataError, match="did you mean 'mnist'.*imagefolder:PATH"):
        load_images(DataConfig(name="mnst"))


def test_list_datasets(tmp_path):
    rows = {r["name"]: r for r in list_datasets(tmp_path)}
    assert set(rows) == set(DATASETS) | set(TEXT_DATASETS) >= {"digits", "mnist", "fashion-mnist", "tinyshakespeare"}
    assert rows["mnist"] == {"name": "mnist", "description": DATASETS["mnist"].description, "kind": "image",
                             "shape": (1, 28, 28), "labelled": True, "num_classes": 10, "cached": False}
    assert rows["tinyshakespeare"]["kind"] == "text" and not rows["tinyshakespeare"]["cached"]
    assert rows["digits"]["cached"]  # bundled with scikit-learn


def test_every_download_has_mirrors_and_checksums():
    for info in DATASETS.values():
        assert info.bundled or (len(info.mirrors) >= 2 and len(info.files) >= 1)
        for f in info.files:
            assert f.sha256 and len(f.sha256) == 64


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("GENFORGE_CACHE")
    monkeypatch.setattr(io_module.sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "genforge"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert default_cache_dir() == Path.home() / ".cache" / "genforge"
    monkeypatch.setattr(io_module.sys, "platform", "darwin")
    assert default_cache_dir() == Path.home() / "Library" / "Caches" / "genforge"
    monkeypatch.setattr(io_module.sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert default_cache_dir() == tmp_path / "local" / "genforge" / "cache"


def test_shared_options_on_digits():
    data = load_images(DataConfig(name="digits", image_size=16, channels=3, max_train=100))
    assert data.train_x.shape == (100, 3, 16, 16) and data.test_x.shape[1:] == (3, 16, 16)
    assert (data.channels, data.image_size, data.num_classes) == (3, 16, 10)


def test_image_data_checks_its_tensors():
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    y = torch.zeros(4, dtype=torch.int64)
    ImageData("t", x, y, x, y, ["a"])
    with pytest.raises(ValueError, match="uint8"):
        ImageData("t", x.float(), y, x, y, ["a"])
    with pytest.raises(ValueError, match="labels outside"):
        ImageData("t", x, y + 1, x, y, ["a"])
    with pytest.raises(ValueError, match="both"):
        ImageData("t", x, y, x, None, ["a"])
