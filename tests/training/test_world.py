"""The launcher's world as genforge reads it from torchrun's variables: one clear line when it does not add up."""

from __future__ import annotations

import pytest

from genforge.config import ConfigError
from genforge.training.distributed import World, check_batch, world_from_env

VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@pytest.fixture
def launcher(monkeypatch):
    for name in VARS:
        monkeypatch.delenv(name, raising=False)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
    return set_env


def test_no_launcher_is_one_rank(launcher):
    assert world_from_env() == World(0, 1, 0)
    assert not world_from_env().distributed


def test_torchrun_variables(launcher):
    launcher(WORLD_SIZE="4", RANK="3", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2")  # rank 3: node 1's second process
    world = world_from_env()
    assert (world.rank, world.size, world.local_rank, world.is_main, world.distributed) == (3, 4, 1, False, True)


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 with WORLD_SIZE=2"),
    ({"WORLD_SIZE": "0"}, "RANK=0 with WORLD_SIZE=0"),
    ({"WORLD_SIZE": "2", "RANK": "-1"}, "RANK=-1 with WORLD_SIZE=2"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"}, "LOCAL_RANK=2, LOCAL_WORLD_SIZE=2"),
    ({"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "4"}, "LOCAL_WORLD_SIZE=4, WORLD_SIZE=2"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two', which is not an integer"),
])
def test_a_world_that_does_not_add_up_is_one_line(launcher, env, message):
    launcher(**env)
    with pytest.raises(ConfigError) as e:
        world_from_env()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_global_batch_must_split_into_the_ranks():
    check_batch(World(1, 4, 1), 32)
    with pytest.raises(ConfigError, match=r"train.batch_size=30 \(the global batch\) does not split into 4 ranks"):
        check_batch(World(1, 4, 1), 30)
