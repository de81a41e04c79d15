"""Data-parallel training on PyTorch's own engine: ``torchrun`` launches, ``torch.distributed`` talks.

``torchrun --nproc_per_node N -m genforge train RECIPE`` (or ``--nnodes M --rdzv_endpoint HOST:PORT`` on
each machine) runs the same recipe on N·M ranks: gloo on CPU, NCCL on CUDA. ``train.batch_size`` stays the
*global* batch: every rank reads the same batch stream (so its state, and resume, is the same everywhere)
and keeps its 1/world share of each batch's rows, and the training noise is drawn for the global batch and
sharded the same way (``models.rng.set_batch_shard``). Gradients are averaged by
``DistributedDataParallel``, one wrapper per parameter group (a GAN's generator and discriminator each get
their own, so a generator step never waits for discriminator gradients). Rank 0 alone logs, samples,
evaluates, keeps the EMA and writes checkpoints; every rank resumes from them.

Why torchrun and not Accelerate's launcher: torchrun ships with torch (no extra dependency), gives elastic
rendezvous across machines and tears the whole job down when one worker dies; ``accelerate launch`` is a
front end to the same machinery and works too, since it sets the same environment variables.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn

from genforge.config import ConfigError
from genforge.models import rng
from genforge.training.checkpoint import TrainingError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
PR_SET_PDEATHSIG = 1  # linux/prctl.h
TIMEOUT_ENV = "GENFORGE_DIST_TIMEOUT_S"  # seconds a rank waits for the others (default 1800, torch's own)


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` ranks, ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ConfigError(f"the launcher set {name}={value!r}, which is not an integer") from None


def world_from_env() -> World:
    """The world a launcher (torchrun, accelerate, mpirun with the torch variables) describes; 1 rank without one."""
    size, rank, local = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if size < 1 or not 0 <= rank < size:
        raise ConfigError(f"the launcher's world does not add up: RANK={rank} with WORLD_SIZE={size}")
    local_size = _env_int("LOCAL_WORLD_SIZE", size)
    if not 0 <= local < local_size or local_size > size:
        raise ConfigError(f"the launcher's world does not add up: LOCAL_RANK={local}, LOCAL_WORLD_SIZE={local_size}, "
                          f"WORLD_SIZE={size}")
    return World(rank, size, local)


def setup(world: World, device: torch.device) -> None:
    """Join the process group (gloo on CPU, NCCL on CUDA) and shard the training noise; no-op for 1 rank."""
    if not world.distributed or dist.is_initialized():
        rng.set_batch_shard(world.rank, world.size)
        return
    if os.environ.get("MASTER_ADDR", "") in LOOPBACK and "GLOO_SOCKET_IFNAME" not in os.environ \
            and os.path.exists("/sys/class/net/lo"):
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # gloo can otherwise pick an interface the peers cannot reach
    timeout = datetime.timedelta(seconds=_env_int(TIMEOUT_ENV, 1800))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    exit_with_launcher(world)
    dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=timeout)
    rng.set_batch_shard(world.rank, world.size)


def exit_with_launcher(world: World) -> str | None:
    """End this rank when the torchrun agent that started it dies (even by SIGKILL): its peers and its
    rendezvous are gone, so training on would only hold the run's lock. Linux: the kernel's parent-death
    signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere a daemon thread that watches ``os.getppid()``.
    Only under torchrun (``TORCHELASTIC_RUN_ID``): ranks started by hand may outlive their shell. Armed as
    the rank joins the group; a launcher that died before that leaves the rank without the launcher's
    rendezvous store (on its node), so the join fails. Returns the mechanism used, or None."""
    if not world.distributed or not os.environ.get("TORCHELASTIC_RUN_ID"):
        return None
    parent = os.getppid()
    mechanism = "watchdog"
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                mechanism = "pdeathsig"
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the launcher died while the signal was being armed
        os.kill(os.getpid(), signal.SIGKILL)
    if mechanism == "watchdog":
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGKILL)
        threading.Thread(target=watch, name="genforge-launcher-watchdog", daemon=True).start()
    return mechanism


def teardown(world: World) -> None:
    rng.set_batch_shard(0, 1)
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def local_device(world: World, requested: str) -> str:
    """``cuda`` / ``auto`` on a CUDA machine → this rank's own GPU (``cuda:LOCAL_RANK``); others unchanged."""
    if world.distributed and requested in ("auto", "cuda") and torch.cuda.is_available():
        if world.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={world.local_rank} but this machine has {torch.cuda.device_count()} "
                              f"GPU(s): launch at most that many processes per node")
        return f"cuda:{world.local_rank}"
    return requested


def sync_batch_norms(model: nn.Module, world: World, device: torch.device) -> int:
    """Make the model's BatchNorm layers SyncBatchNorm (in place: the same parameters and buffers, the same
    state-dict keys) when several ranks train on CUDA, so their statistics are the global batch's; returns how
    many layers there are now. On CPU, where SyncBatchNorm does not run, BatchNorm statistics stay per rank."""
    if not world.distributed or device.type != "cuda":
        return 0
    nn.SyncBatchNorm.convert_sync_batchnorm(model)  # a model that is not itself a BatchNorm is changed in place
    return sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())


def check_batch(world: World, batch_size: int) -> None:
    if batch_size % world.size:
        raise ConfigError(f"train.batch_size={batch_size} (the global batch) does not split into {world.size} "
                          f"ranks; make it a multiple of the world size")


def broadcast(world: World, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (picklable objects)."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def sync_rng(world: World) -> None:
    """Give every rank rank 0's RNG state (after rank-0-only work such as evaluation drew from it)."""
    if world.distributed:
        state = broadcast(world, torch.get_rng_state() if world.is_main else None)
        torch.set_rng_state(state)


def check_same(world: World, value: Any, what: str) -> None:
    """Raise on every rank (not just the odd one out) unless every rank holds the same ``value``."""
    if not world.distributed:
        return
    values: list[Any] = [None] * world.size
    dist.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        raise TrainingError(f"the ranks disagree about {what}: {values} (rank by rank); they must all see the "
                            f"same run directory")


def mean_scalars(world: World, values: dict[str, float]) -> dict[str, float]:
    """The mean over ranks of each logged scalar (each rank logs its shard's loss; the log shows the batch's)."""
    if not world.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / world.size for k, v in zip(keys, t)}


class ShardedBatches:
    """This rank's rows of every global batch of ``batches``; ``state_dict`` is the shared stream's."""

    def __init__(self, batches: Iterator[dict[str, Tensor]], world: World) -> None:
        self.batches, self.world = batches, world

    def __iter__(self) -> "ShardedBatches":
        return self

    def __next__(self) -> dict[str, Tensor]:
        batch = next(self.batches)
        out = {}
        for k, v in batch.items():
            b = v.shape[0] // self.world.size  # [B_global, ...] → [B_global / world, ...]
            if b * self.world.size != v.shape[0]:
                raise ConfigError(f"a batch of {v.shape[0]} rows does not split into {self.world.size} ranks")
            out[k] = v[self.world.rank * b:(self.world.rank + 1) * b]
        return out

    def state_dict(self) -> dict[str, Any]:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state)


class _GroupLosses(nn.Module):
    """DDP's view of one parameter group: it owns the group's parameters (and no others) and its forward is
    the model's losses for that group, so the group's gradients — and only those — are averaged."""

    def __init__(self, model: nn.Module, group: str, params: list[nn.Parameter]) -> None:
        super().__init__()
        self.params = nn.ParameterList(params)
        object.__setattr__(self, "model", model)  # not a submodule: DDP must not see the other groups
        self.group = group

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.model.losses(batch, groups=(self.group,))


class GroupReplicas:
    """One ``DistributedDataParallel`` per parameter group of ``model`` (nothing wrapped for 1 rank)."""

    def __init__(self, model: nn.Module, groups: dict[str, list[nn.Parameter]], world: World) -> None:
        self.model, self.world = model, world
        self.ddp: dict[str, nn.parallel.DistributedDataParallel] = {}
        if world.distributed:
            for g, params in groups.items():
                self.ddp[g] = nn.parallel.DistributedDataParallel(_GroupLosses(model, g, params))

    def losses(self, batch: dict[str, Tensor], group: str) -> dict[str, Tensor]:
        ddp = self.ddp.get(group)
        return ddp(batch) if ddp is not None else self.model.losses(batch, groups=(group,))

    def no_sync(self, group: str, last: bool) -> ContextManager:
        """Within it, backward accumulates locally; the last micro-batch of an update all-reduces."""
        ddp = self.ddp.get(group)
        return ddp.no_sync() if ddp is not None and not last else nullcontext()


def agree(world: World, choice: str | None, choices: tuple[str, ...]) -> str | None:
    """Rank 0's ``choice`` (None or one of ``choices``) on every rank: one small broadcast per call."""
    if not world.distributed:
        return choice
    code = torch.tensor([0 if choice is None else choices.index(choice) + 1], dtype=torch.int64)
    dist.broadcast(code, src=0)
    return None if int(code) == 0 else choices[int(code) - 1]


@contextmanager
def lost_rank(world: World, step: Callable[[], int]) -> Iterator[None]:
    """Turn a collective that failed because another rank died or hung into one clear ``TrainingError``."""
    if not world.distributed:
        yield
        return
    try:
        yield
    except (dist.DistError, RuntimeError) as e:
        if not isinstance(e, dist.DistError) and "gloo" not in str(e).lower() and "nccl" not in str(e).lower():
            raise
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise TrainingError(f"rank {world.rank} of {world.size} lost contact with another rank at step {step()} "
                            f"({first}); the job stops: the last checkpoint is intact, rerun with --resume") from None
