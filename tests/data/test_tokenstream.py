"""TokenBatches (random windows, exact resume) and eval_windows (every target once)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genforge.data import DataError, TokenBatches, eval_windows


def test_batches_are_windows_of_the_ids():
    ids = np.arange(1000, dtype=np.uint16)
    x = next(TokenBatches(ids, 16, 8, seed=0))["x"]
    assert x.dtype == torch.int64 and x.shape == (8, 17)
    assert (x.diff(dim=1) == 1).all()  # contiguous slices of arange
    assert int(x.min()) >= 0 and int(x.max()) <= 999


def test_every_start_is_reachable():
    ids = np.arange(6, dtype=np.uint16)
    starts = {int(b["x"][i, 0]) for b, _ in zip(TokenBatches(ids, 3, 4, seed=1), range(50)) for i in range(4)}
    assert starts == {0, 1, 2}  # N - T starts: the last window ends on the last token


def test_reads_a_memmap_of_uint16(tmp_path):
    ids = (np.arange(500) % 300).astype("<u2")
    ids.tofile(tmp_path / "train.bin")
    mm = np.memmap(tmp_path / "train.bin", dtype="<u2", mode="r")
    x = next(TokenBatches(mm, 32, 4, seed=0))["x"]
    assert x.shape == (4, 33) and int(x.max()) < 300


def test_seeded_and_independent_of_the_global_rng():
    ids = np.arange(10_000)
    a = [b["x"] for b, _ in zip(TokenBatches(ids, 8, 4, seed=3), range(5))]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    b = [b["x"] for b, _ in zip(TokenBatches(ids, 8, 4, seed=3), range(5))]
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    c = next(TokenBatches(ids, 8, 4, seed=4))["x"]
    assert not torch.equal(a[0], c)
    assert not torch.equal(a[0], a[1])


def test_resume_replays_the_same_windows():
    ids = np.arange(5000)
    stream = TokenBatches(ids, 10, 3, seed=7)
    for _ in range(4):
        next(stream)
    state = stream.state_dict()
    expected = [next(stream)["x"] for _ in range(3)]
    resumed = TokenBatches(ids, 10, 3, seed=7)
    resumed.load_state_dict(state)
    assert all(torch.equal(next(resumed)["x"], e) for e in expected)
    assert state == {"step": 4, "seed": 7, "num_tokens": 5000, "block_size": 10, "batch_size": 3}


def test_resume_with_other_settings_warns_and_bad_state_fails():
    stream = TokenBatches(np.arange(100), 10, 3, seed=7)
    with pytest.warns(UserWarning, match="seed=8 but these have seed=7"):
        stream.load_state_dict({"step": 2, "seed": 8})
    assert stream.step == 2
    with pytest.raises(DataError, match="integer 'step'"):
        stream.load_state_dict({"epoch": 1})
    with pytest.raises(DataError, match="negative"):
        stream.load_state_dict({"step": -1})


def test_too_short_names_the_sizes():
    with pytest.raises(DataError, match=r"the val split holds 10 tokens, too few for one window of block_size \+ 1 "
                                        r"= 17 tokens.*at most 9"):
        TokenBatches(np.arange(10), 16, 2, seed=0, split="val")
    with pytest.raises(DataError, match="holds 16 tokens.*= 17"):
        list(eval_windows(np.arange(16), 16, 2))
    next(TokenBatches(np.arange(17), 16, 2, seed=0))  # exactly one window fits
    with pytest.raises(DataError, match="batch_size must be positive"):
        TokenBatches(np.arange(100), 4, 0, seed=0)
    with pytest.raises(DataError, match="1-D integer"):
        TokenBatches(np.zeros((10, 10), dtype=np.int64), 4, 1, seed=0)


@pytest.mark.parametrize("n,block_size,batch_size", [
    (n, t, b) for n in (2, 5, 17, 18, 33, 100) for t in (1, 4, 16) for b in (1, 3) if n >= t + 1])
def test_eval_windows_predict_every_token_once(n, block_size, batch_size):
    ids = np.arange(n, dtype=np.uint16)
    targets = []
    for w in eval_windows(ids, block_size, batch_size):
        assert w.dtype == torch.int64 and w.dim() == 2
        assert 1 <= w.shape[0] <= batch_size and 2 <= w.shape[1] <= block_size + 1
        assert (w.diff(dim=1) == 1).all()  # each row is a contiguous slice: targets see their true context
        targets += w[:, 1:].flatten().tolist()
    assert targets == list(range(1, n))


def test_eval_windows_shapes():
    shapes = [tuple(w.shape) for w in eval_windows(np.arange(23), 4, 2)]
    assert shapes == [(2, 5), (2, 5), (1, 5), (1, 3)]  # 5 full windows (20 targets), then 2 targets left
