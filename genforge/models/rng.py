"""Seeded randomness for sampling, one generator per request even when requests share a batch.

Every family draws its sampling noise through :func:`randn`, :func:`rand` and
:func:`randint` with the ``generator`` it was given. That is a
``torch.Generator`` (or None: the global RNG), or a :class:`RowGenerators`:
several seeded generators, each owning consecutive rows of the batch. With
``RowGenerators`` each part draws its rows exactly as it would have drawn them
alone, so a server can put several seeded requests into one forward pass and
every request still gets the images its seed gives on its own (as in
diffusers' ``randn_tensor`` with a list of generators). Draws happen on the
CPU, so a seed gives the same numbers on any device.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch
from torch import Tensor


class RowGenerators:
    """Generators that own consecutive batch rows: ``parts`` = [(generator, rows), ...] in batch order."""

    def __init__(self, parts: Sequence[tuple[torch.Generator, int]]) -> None:
        if not parts or any(rows < 1 for _, rows in parts):
            raise ValueError("RowGenerators needs at least one (generator, rows >= 1) part")
        self.parts = list(parts)
        self.rows = sum(rows for _, rows in parts)


Generator = Union[torch.Generator, RowGenerators, None]


def _by_rows(draw: Callable[[tuple[int, ...], torch.Generator | None], Tensor], shape: Sequence[int],
             generator: Generator) -> Tensor:
    shape = tuple(int(s) for s in shape)
    if not isinstance(generator, RowGenerators):
        return draw(shape, generator)
    if not shape or shape[0] != generator.rows:
        raise ValueError(f"a draw of shape {list(shape)} does not split into the generators' {generator.rows} rows")
    return torch.cat([draw((rows, *shape[1:]), g) for g, rows in generator.parts])


def randn(shape: Sequence[int], generator: Generator = None) -> Tensor:
    """Standard normal float32 of ``shape`` on the CPU; with :class:`RowGenerators`, rows split by part."""
    return _by_rows(lambda s, g: torch.randn(s, generator=g), shape, generator)


def rand(shape: Sequence[int], generator: Generator = None) -> Tensor:
    """Uniform [0, 1) float32 of ``shape`` on the CPU; rows split by part like :func:`randn`."""
    return _by_rows(lambda s, g: torch.rand(s, generator=g), shape, generator)


def randint(high: int, shape: Sequence[int], generator: Generator = None) -> Tensor:
    """int64 uniform in [0, high) of ``shape`` on the CPU; rows split by part like :func:`randn`."""
    return _by_rows(lambda s, g: torch.randint(high, s, generator=g), shape, generator)


# --------------------------------------------------------------------------- training noise, sharded by rank
# Data-parallel training splits one global batch across ranks. For the ranks together to draw exactly the
# noise one process would draw for the whole batch, every rank draws the global batch's noise from the same
# (identically seeded) global RNG and keeps its own rows. Only the training losses draw through these.
_SHARD = [0, 1]  # [rank, world size] of the running process


def set_batch_shard(rank: int, world: int) -> None:
    """Declare that this process holds rows ``[rank·b, (rank+1)·b)`` of every global training batch (``world·b``)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    _SHARD[:] = [rank, world]


def _shard_draw(draw: Callable[[tuple[int, ...]], Tensor], shape: Sequence[int]) -> Tensor:
    """``draw`` the global rows of ``shape`` (leading dim = local batch) and keep this rank's."""
    rank, world = _SHARD
    shape = tuple(int(s) for s in shape)
    if world == 1:
        return draw(shape)
    b = shape[0]
    return draw((b * world, *shape[1:]))[rank * b:(rank + 1) * b]


def train_randn(shape: Sequence[int], device: torch.device | str) -> Tensor:
    """Training noise: standard normal [B, ...] on ``device`` from the global RNG; this rank's rows of the global
    batch's draw."""
    return _shard_draw(lambda s: torch.randn(s, device=device), shape)


def train_rand(shape: Sequence[int], device: torch.device | str) -> Tensor:
    """Training noise: uniform [0, 1) [B, ...], sharded like :func:`train_randn`."""
    return _shard_draw(lambda s: torch.rand(s, device=device), shape)


def train_randint(low: int, high: int, shape: Sequence[int], device: torch.device | str) -> Tensor:
    """Training noise: int64 uniform in [low, high) [B, ...], sharded like :func:`train_randn`."""
    return _shard_draw(lambda s: torch.randint(low, high, s, device=device), shape)
