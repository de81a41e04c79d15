"""``BatchStream``: seeded epochs, dropped tails, flips, and bit-identical resume."""

from __future__ import annotations

import io
import itertools

import pytest
import torch

from genforge.data import BatchStream, DataError


def indexed(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose pixel value is their index, and labels equal to the index."""
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return x, torch.arange(n)


def random_images(n: int = 40) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def take(stream, k):
    return list(itertools.islice(stream, k))


def test_batches_have_the_right_type_and_shape():
    x, y = indexed(48)
    batch = next(BatchStream(x, y, 8, seed=0))
    assert set(batch) == {"x", "y"}
    assert batch["x"].dtype == torch.uint8 and batch["x"].shape == (8, 1, 2, 2)
    assert batch["y"].dtype == torch.int64 and batch["y"].shape == (8,)
    assert batch["x"][:, 0, 0, 0].long().equal(batch["y"])  # images and labels stay paired
    assert set(next(BatchStream(x, None, 8, seed=0))) == {"x"}


def test_an_epoch_visits_every_example_once():
    x, y = indexed(48)
    stream = BatchStream(x, y, 8, seed=0)
    for epoch in range(3):
        seen = torch.cat([b["y"] for b in take(stream, 6)])
        assert sorted(seen.tolist()) == list(range(48)), epoch
    assert stream.state_dict()["epoch"] == 2


def test_incomplete_last_batch_is_dropped():
    x, y = indexed(10)
    stream = BatchStream(x, y, 4, seed=0)
    assert stream.batches_per_epoch == 2
    first = torch.cat([b["y"] for b in take(stream, 2)])
    assert len(set(first.tolist())) == 8
    take(stream, 1)
    assert stream.state_dict()["epoch"] == 1 and stream.state_dict()["position"] == 4


def test_seeds_give_different_orders_and_ignore_the_global_rng():
    x, y = indexed(64)
    order = lambda seed: torch.cat([b["y"] for b in take(BatchStream(x, y, 16, seed=seed), 4)])  # noqa: E731
    a = order(0)
    torch.manual_seed(123)
    assert order(0).equal(a)
    assert not order(1).equal(a)
    assert not order(-1).equal(a)


def test_epochs_differ():
    x, y = indexed(64)
    stream = BatchStream(x, y, 64, seed=0)
    assert not next(stream)["y"].equal(next(stream)["y"])


def test_hflip_flips_some_images_only():
    x = random_images()
    plain = take(BatchStream(x, None, 8, seed=3), 5)
    flipped = take(BatchStream(x, None, 8, seed=3, hflip=True), 5)
    n_flipped = 0
    for p, f in zip(plain, flipped):
        for a, b in zip(p["x"], f["x"]):
            assert b.equal(a) or b.equal(a.flip(-1))
            n_flipped += int(not b.equal(a))
    assert 5 < n_flipped < 35
    assert x.equal(random_images())  # the stored images are never modified


@pytest.mark.parametrize("hflip", [False, True])
def test_resume_is_bit_identical(hflip):
    x, y = random_images(), torch.arange(40) % 7
    full = BatchStream(x, y, 6, seed=5, hflip=hflip)
    take(full, 3)
    state = full.state_dict()
    assert all(type(v) is int for v in state.values())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = BatchStream(x, y, 6, seed=5, hflip=hflip)
    torch.manual_seed(999)  # global RNG must not matter
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for a, b in zip(take(full, 15), take(restored, 15)):  # crosses two epoch boundaries
        assert a["x"].equal(b["x"]) and a["y"].equal(b["y"])


def test_batch_size_larger_than_data():
    x, y = indexed(5)
    with pytest.raises(DataError, match="batch_size 6 is larger than the 5"):
        BatchStream(x, y, 6, seed=0)


def test_bad_inputs_and_states():
    x, y = indexed(8)
    with pytest.raises(DataError, match="shape"):
        BatchStream(x, y[:4], 2, seed=0)
    with pytest.raises(DataError, match="hflip"):
        BatchStream(torch.zeros(8, 3, dtype=torch.uint8), None, 2, seed=0, hflip=True)
    stream = BatchStream(x, y, 2, seed=0)
    with pytest.raises(DataError, match="epoch"):
        stream.load_state_dict({"position": 3})
    with pytest.warns(UserWarning, match="seed=1"):
        stream.load_state_dict({"epoch": 0, "position": 2, "seed": 1, "num_examples": 8})
