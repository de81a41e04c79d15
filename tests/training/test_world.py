"""The launcher's world as genforge reads it from torchrun's variables: one clear line when it does not add up."""

from __future__ import annotations

import pytest

from genforge.config import ConfigError
from genforge.training.distributed import World, check_batch, sync_batch_norms, world_from_env

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


def test_batch_norms_become_sync_batch_norms_only_for_several_cuda_ranks():
    """The conversion itself runs anywhere (the synchronised forward needs CUDA): parameters, buffers and
    state-dict keys stay the same objects and names, so optimizers, EMA and checkpoints are unaffected."""
    import torch

    from genforge.models import build, config_class

    def gan():
        torch.manual_seed(0)
        return build(config_class("gan")(family="gan", channels=1, image_size=8, z_dim=8, g_width=8, d_width=8,
                                         num_classes=10, conditional=True))

    assert sync_batch_norms(gan(), World(0, 2, 0), torch.device("cpu")) == 0
    assert sync_batch_norms(gan(), World(0, 1, 0), torch.device("cuda")) == 0
    model = gan()
    params, keys = [id(p) for p in model.parameters()], list(model.state_dict())
    n_bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert n_bn > 0
    assert sync_batch_norms(model, World(0, 2, 0), torch.device("cuda")) == n_bn
    assert [id(p) for p in model.parameters()] == params and list(model.state_dict()) == keys
