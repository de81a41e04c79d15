"""Checksummed downloads against a local HTTP server: success, mismatch, server down, fallback."""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import replace

import pytest

from genforge.config import DataConfig
from genforge.data import DATASETS, DataError, list_datasets, load_images
from genforge.data.download import RemoteFile, download_file, verify_file

from .conftest import IDX_NAMES, write_fake_mnist

PAYLOAD = b"genforge test payload " * 1000


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def served(http_root):
    """A file ``good/blob.bin`` on the local server; returns (spec, base URL)."""
    root, base = http_root
    (root / "good").mkdir()
    (root / "good" / "blob.bin").write_bytes(PAYLOAD)
    return RemoteFile("blob.bin", sha256=sha256(PAYLOAD)), base


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens there any more


def test_download_lands_verified_file(served, tmp_path):
    spec, base = served
    dest = tmp_path / "cache" / "ds"
    path = download_file(spec, dest, [f"{base}/good/"], progress=False)
    assert path == dest / "blob.bin"
    assert path.read_bytes() == PAYLOAD
    assert [p.name for p in dest.iterdir()] == ["blob.bin"]  # no temporary left
    if os.name == "posix":
        assert path.stat().st_mode & 0o777 == 0o644  # readable by others sharing the cache


def test_md5_is_used_when_no_sha256(served, tmp_path):
    _, base = served
    spec = RemoteFile("blob.bin", md5=hashlib.md5(PAYLOAD).hexdigest())
    assert download_file(spec, tmp_path, [f"{base}/good"], progress=False).read_bytes() == PAYLOAD


def test_checksum_mismatch_leaves_nothing(served, tmp_path):
    _, base = served
    wrong = "0" * 64
    dest = tmp_path / "cache" / "ds"
    with pytest.raises(DataError) as err:
        download_file(RemoteFile("blob.bin", sha256=wrong), dest, [f"{base}/good/"], progress=False)
    msg = str(err.value)
    assert "blob.bin" in msg and wrong in msg and sha256(PAYLOAD) in msg
    assert list(dest.iterdir()) == []  # neither the final file nor a temporary


def test_server_down_names_url(tmp_path):
    url = closed_port_url()
    dest = tmp_path / "ds"
    with pytest.raises(DataError, match="could not download blob.bin") as err:
        download_file(RemoteFile("blob.bin", sha256="0" * 64), dest, [url], timeout=5, progress=False,
                      hint="put blob.bin into the cache")
    assert url + "blob.bin" in str(err.value)
    assert "put blob.bin into the cache" in str(err.value)
    assert list(dest.iterdir()) == []


def test_falls_back_to_next_mirror(served, tmp_path):
    spec, base = served
    path = download_file(spec, tmp_path, [f"{base}/missing/", f"{base}/good/"], progress=False)
    assert path.read_bytes() == PAYLOAD


def test_all_mirrors_failing_lists_each(served, tmp_path):
    spec, base = served
    down = closed_port_url()
    with pytest.raises(DataError) as err:
        download_file(spec, tmp_path, [f"{base}/missing/", down], timeout=5, progress=False)
    msg = str(err.value)
    assert f"{base}/missing/blob.bin: HTTP 404" in msg
    assert f"{down}blob.bin" in msg


# ----------------------------------------------------------------- through the registry


@pytest.fixture
def fake_dataset(http_root, monkeypatch, tmp_path):
    """A registry entry shaped like MNIST whose mirrors are the local server (first one 404s)."""
    root, base = http_root
    arrays = write_fake_mnist(root / "mirror")
    files = tuple(RemoteFile(n, sha256=sha256((root / "mirror" / n).read_bytes())) for n in IDX_NAMES)
    info = replace(DATASETS["mnist"], name="fake-mnist", files=files, mirrors=(f"{base}/gone/", f"{base}/mirror/"))
    monkeypatch.setitem(DATASETS, "fake-mnist", info)
    return info, arrays, tmp_path / "cache"


def test_load_downloads_once_then_reads_cache(fake_dataset):
    info, arrays, cache = fake_dataset
    assert not next(r for r in list_datasets(cache) if r["name"] == "fake-mnist")["cached"]
    data = load_images(DataConfig(name="fake-mnist"), cache_dir=cache)
    assert sorted(p.name for p in (cache / "fake-mnist").iterdir()) == sorted(IDX_NAMES)
    assert data.train_x.shape == (20, 1, 28, 28) and data.test_x.shape == (10, 1, 28, 28)
    assert (data.train_x[:, 0].numpy() == arrays[IDX_NAMES[0]]).all()
    assert next(r for r in list_datasets(cache) if r["name"] == "fake-mnist")["cached"]
    again = load_images(DataConfig(name="fake-mnist"), cache_dir=cache, download=False)
    assert again.train_x.equal(data.train_x)


def test_tampered_cache_file_is_refused(fake_dataset):
    info, _, cache = fake_dataset
    load_images(DataConfig(name="fake-mnist"), cache_dir=cache)
    target = cache / "fake-mnist" / IDX_NAMES[3]
    target.write_bytes(target.read_bytes()[:-3])
    with pytest.raises(DataError, match=f"{IDX_NAMES[3]}.*delete it"):
        load_images(DataConfig(name="fake-mnist"), cache_dir=cache)


def test_no_download_and_empty_cache_says_what_to_do(fake_dataset):
    _, _, cache = fake_dataset
    with pytest.raises(DataError) as err:
        load_images(DataConfig(name="fake-mnist"), cache_dir=cache, download=False)
    msg = str(err.value)
    assert all(n in msg for n in IDX_NAMES)
    assert str(cache / "fake-mnist") in msg and "--data-dir" in msg


def test_registry_checksums_match_real_mnist(mnist_dir):
    for spec in DATASETS["mnist"].files:
        verify_file(mnist_dir / spec.name, spec)  # sha256
        assert hashlib.md5((mnist_dir / spec.name).read_bytes()).hexdigest() == spec.md5
