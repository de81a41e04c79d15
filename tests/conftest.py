"""Shared fixtures: seeded RNGs, the optional real-data folder, a local HTTP server for download tests."""

from __future__ import annotations

import functools
import http.server
import os
import random
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real data sets (MNIST IDX files, Tiny Shakespeare) live beside the checkout when
# present; GENFORGE_TEST_DATA points elsewhere. Tests that need them skip otherwise.
SHARED_DATA = Path(os.environ.get("GENFORGE_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed_and_restore_dtype():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)


def shared_data(folder: str, probe: str, what: str) -> Path:
    """``SHARED_DATA / folder`` when it holds ``probe``; otherwise skips the test, naming ``what``."""
    d = SHARED_DATA / folder
    if not (d / probe).is_file():
        pytest.skip(f"{what} not found in {d}")
    return d


@pytest.fixture
def mnist_dir() -> Path:
    """Folder with the four official MNIST IDX gz files; skips the test when absent."""
    return shared_data("mnist", "train-images-idx3-ubyte.gz", "real MNIST")


@pytest.fixture
def shakespeare_dir() -> Path:
    """Folder with Tiny Shakespeare's ``input.txt``; skips the test when absent."""
    return shared_data("tinyshakespeare", "input.txt", "Tiny Shakespeare")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep test output clean
        pass


@pytest.fixture
def http_root(tmp_path):
    """(folder served, base URL) of an HTTP server on 127.0.0.1 with an ephemeral port."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
