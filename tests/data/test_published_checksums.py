"""Every built-in dataset's checksums against the real published files.

Where the real files are beside the checkout (``../shared/data`` or ``$GENFORGE_TEST_DATA``: MNIST, Tiny
Shakespeare) every recorded digest — md5, sha256 and the sha256 of the decompressed bytes — is computed
from them. Fashion-MNIST's files are not kept here: its md5s are compared with the table Zalando publishes
in the dataset's README, and every file records md5 and sha256 together, so a download is checked by both
(a registry whose sha256 contradicted its own md5 once refused the official files).
"""

from __future__ import annotations

import gzip
import hashlib

import pytest

from genforge.data.registry import DATASETS, TEXT_DATASETS

from ..conftest import SHARED_DATA

# https://github.com/zalandoresearch/fashion-mnist#get-the-data (the md5 column)
ZALANDO_MD5 = {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
               "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
               "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
               "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}


def _digest(data: bytes, algorithm: str) -> str:
    return hashlib.new(algorithm, data).hexdigest()


@pytest.mark.parametrize("dataset", ["mnist"])
def test_recorded_digests_are_those_of_the_real_files(dataset):
    folder = SHARED_DATA / dataset
    if not folder.is_dir():
        pytest.skip(f"the real {dataset} files are not beside the checkout ({folder})")
    for spec in DATASETS[dataset].files:
        data = (folder / spec.name).read_bytes()
        assert spec.md5 and spec.sha256, f"{dataset} {spec.name} records md5 and sha256 together"
        assert _digest(data, "md5") == spec.md5, spec.name
        assert _digest(data, "sha256") == spec.sha256, spec.name
        if spec.raw_sha256:
            assert _digest(gzip.decompress(data), "sha256") == spec.raw_sha256, spec.name


def test_tinyshakespeare_is_the_real_file():
    path = SHARED_DATA / "tinyshakespeare" / "input.txt"
    if not path.is_file():
        pytest.skip(f"{path} is not beside the checkout")
    assert _digest(path.read_bytes(), "sha256") == TEXT_DATASETS["tinyshakespeare"].file.sha256


def test_fashion_mnist_records_zalandos_md5s_and_a_sha256_for_every_file():
    files = {f.name: f for f in DATASETS["fashion-mnist"].files}
    assert set(files) == set(ZALANDO_MD5)
    for name, spec in files.items():
        assert spec.md5 == ZALANDO_MD5[name]
        assert spec.sha256 is not None and len(spec.sha256) == 64
    assert files["train-images-idx3-ubyte.gz"].sha256.startswith("3aede38d")  # what the official file hashes to


def test_every_image_dataset_file_records_both_digests():
    for info in DATASETS.values():
        for spec in info.files:
            assert spec.md5 and spec.sha256, f"{info.name} {spec.name}"
