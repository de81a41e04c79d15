"""``data_dir`` files checked against the built-in datasets' checksums (``data.verify``, ``--no-verify``)."""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
from dataclasses import replace

import pytest

from genforge.config import DataConfig
from genforge.data import DATASETS, DataError, load_images, load_text
from genforge.data import download
from genforge.data.download import RemoteFile

from .conftest import IDX_NAMES, write_fake_mnist

FIX = "point --data-dir at {}'s files, or pass --no-verify to use your own variant"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def refused(cfg: DataConfig, **kw) -> str:
    with pytest.raises(DataError) as err:
        load_images(cfg, **kw)
    msg = str(err.value)
    assert "\n" not in msg  # one line
    return msg


def pretend_mnist_is(monkeypatch, folder, *, raw: bool = False) -> None:
    """Make the registry's mnist checksums those of the fake files in ``folder`` (gz, or their decompressed bytes)."""
    info = DATASETS["mnist"]
    files = []
    for spec in info.files:
        if raw:
            data = (folder / spec.name.removesuffix(".gz")).read_bytes()
            files.append(replace(spec, raw_sha256=sha256(data)))
        else:
            files.append(replace(spec, sha256=sha256((folder / spec.name).read_bytes())))
    monkeypatch.setitem(DATASETS, "mnist", replace(info, files=tuple(files)))


def test_fake_files_are_refused_naming_file_and_dataset(tmp_path):
    write_fake_mnist(tmp_path)
    for name in ("mnist", "fashion-mnist"):
        msg = refused(DataConfig(name=name, data_dir=str(tmp_path)))
        spec = DATASETS[name].files[0]
        actual = sha256((tmp_path / IDX_NAMES[0]).read_bytes())
        assert msg == (f"{tmp_path / IDX_NAMES[0]} is not {name}'s {IDX_NAMES[0]} (sha256 {actual}, expected "
                       f"{spec.sha256}); {FIX.format(name)}")


def test_no_verify_accepts_them(tmp_path, capsys):
    arrays = write_fake_mnist(tmp_path)
    for name in ("mnist", "fashion-mnist"):
        data = load_images(DataConfig(name=name, data_dir=str(tmp_path), verify=False))
        assert (data.train_x[:, 0].numpy() == arrays[IDX_NAMES[0]]).all()
    write_fake_mnist(tmp_path, compress=False)
    for name in IDX_NAMES:
        (tmp_path / name).unlink()
    load_images(DataConfig(name="fashion-mnist", data_dir=str(tmp_path), verify=False))
    assert capsys.readouterr().err == ""  # nothing checked, nothing said


def test_another_datasets_file_is_named(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path)
    pretend_mnist_is(monkeypatch, tmp_path)
    load_images(DataConfig(name="mnist", data_dir=str(tmp_path)))  # now they are "mnist's": accepted
    msg = refused(DataConfig(name="fashion-mnist", data_dir=str(tmp_path)))
    assert msg == (f"{tmp_path / IDX_NAMES[0]} is mnist's {IDX_NAMES[0]}, not fashion-mnist's; "
                   f"{FIX.format('fashion-mnist')}")


def test_a_file_in_the_wrong_role_is_named(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path)
    pretend_mnist_is(monkeypatch, tmp_path)
    shutil.copy(tmp_path / IDX_NAMES[2], tmp_path / IDX_NAMES[0])  # test images given as training images
    msg = refused(DataConfig(name="mnist", data_dir=str(tmp_path)))
    assert msg.startswith(f"{tmp_path / IDX_NAMES[0]} is mnist's {IDX_NAMES[2]}, not mnist's {IDX_NAMES[0]}; ")


def test_dotted_gz_name_is_hashed_as_is(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path)
    pretend_mnist_is(monkeypatch, tmp_path)
    dotted = tmp_path / IDX_NAMES[0].replace("-idx", ".idx")
    (tmp_path / IDX_NAMES[0]).rename(dotted)
    load_images(DataConfig(name="mnist", data_dir=str(tmp_path)))
    assert refused(DataConfig(name="fashion-mnist", data_dir=str(tmp_path))).startswith(f"{dotted} is mnist's ")


def test_uncompressed_files_use_the_decompressed_checksum(tmp_path, monkeypatch, capsys):
    write_fake_mnist(tmp_path, compress=False)
    plain = tmp_path / IDX_NAMES[0].removesuffix(".gz")
    msg = refused(DataConfig(name="mnist", data_dir=str(tmp_path)))
    assert msg == (f"{plain} is not mnist's {IDX_NAMES[0]} uncompressed (sha256 {sha256(plain.read_bytes())}, "
                   f"expected {DATASETS['mnist'].files[0].raw_sha256}); {FIX.format('mnist')}")
    pretend_mnist_is(monkeypatch, tmp_path, raw=True)
    load_images(DataConfig(name="mnist", data_dir=str(tmp_path)))
    assert capsys.readouterr().err == ""
    msg = refused(DataConfig(name="fashion-mnist", data_dir=str(tmp_path)))
    assert msg == (f"{plain} is mnist's {IDX_NAMES[0]} (uncompressed), not fashion-mnist's; "
                   f"{FIX.format('fashion-mnist')}")


def test_uncompressed_files_without_a_known_checksum_warn(tmp_path, capsys):
    arrays = write_fake_mnist(tmp_path, compress=False)
    data = load_images(DataConfig(name="fashion-mnist", data_dir=str(tmp_path)))  # no decompressed sha256 known
    assert (data.train_x[:, 0].numpy() == arrays[IDX_NAMES[0]]).all()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4  # one line per file
    plain = tmp_path / IDX_NAMES[0].removesuffix(".gz")
    assert lines[0] == (f"genforge: warning: {plain} is used unverified: only the checksum of fashion-mnist's "
                        f"compressed {IDX_NAMES[0]} is known (put the .gz file there to have it checked)")


def test_each_file_is_hashed_once(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path)
    pretend_mnist_is(monkeypatch, tmp_path)
    hashed = []
    real = download.file_digest
    monkeypatch.setattr(download, "file_digest", lambda path, algorithm="sha256": hashed.append(path) or real(
        path, algorithm))
    for _ in range(3):
        load_images(DataConfig(name="mnist", data_dir=str(tmp_path)))
    assert sorted(p.name for p in hashed) == sorted(IDX_NAMES)
    write_fake_mnist(tmp_path, n_train=21)  # rewritten: new size, hashed again (and no longer mnist's)
    with pytest.raises(DataError, match="is not mnist's"):
        load_images(DataConfig(name="mnist", data_dir=str(tmp_path)))
    assert len(hashed) > 4


def test_tinyshakespeare_data_dir_is_verified(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    text = "ROMEO:\nBut soft, what light through yonder window breaks?\n" * 30
    (corpus / "input.txt").write_text(text)
    with pytest.raises(DataError) as err:
        load_text(DataConfig(name="tinyshakespeare", data_dir=str(corpus)), cache_dir=tmp_path, progress=False)
    expected = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert str(err.value) == (f"{corpus / 'input.txt'} is not tinyshakespeare's input.txt (sha256 "
                              f"{sha256(text.encode())}, expected {expected}); {FIX.format('tinyshakespeare')}")
    data = load_text(DataConfig(name="tinyshakespeare", data_dir=str(corpus), verify=False), cache_dir=tmp_path,
                     progress=False)
    assert data.tokenizer.decode(data.train[:6].tolist()) == "ROMEO:"


def test_mnist_file_given_as_tinyshakespeare_is_named(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path)
    pretend_mnist_is(monkeypatch, tmp_path)
    shutil.copy(tmp_path / IDX_NAMES[3], tmp_path / "input.txt")
    with pytest.raises(DataError, match=re.escape(f"input.txt is mnist's {IDX_NAMES[3]}, not tinyshakespeare's "
                                                  f"input.txt; ")):
        load_text(DataConfig(name="tinyshakespeare", data_dir=str(tmp_path)), cache_dir=tmp_path, progress=False)


def test_remote_file_keeps_positional_fields():
    spec = RemoteFile("a.gz", "0" * 64)
    assert spec.sha256 == "0" * 64 and spec.raw_sha256 is None and spec.algorithm == "sha256"


def test_real_uncompressed_mnist(mnist_dir, tmp_path):
    """The decompressed checksums are right: real MNIST unzipped passes as mnist, and is named under fashion-mnist."""
    for name in IDX_NAMES:
        with gzip.open(mnist_dir / name) as f:
            (tmp_path / name.removesuffix(".gz")).write_bytes(f.read())
    data = load_images(DataConfig(name="mnist", data_dir=str(tmp_path)))
    assert data.train_x.shape == (60000, 1, 28, 28)
    msg = refused(DataConfig(name="fashion-mnist", data_dir=str(tmp_path)))
    assert msg.startswith(f"{tmp_path / IDX_NAMES[0].removesuffix('.gz')} is mnist's {IDX_NAMES[0]} (uncompressed), "
                          f"not fashion-mnist's; ")
