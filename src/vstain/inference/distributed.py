"""Multi-GPU inference without a process group: every rank takes every world_size-th field.

Under ``torchrun --nproc-per-node N -m vstain predict ...`` each process reads its rank from the
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), predicts ``fields[rank::world_size]`` on
``cuda:<LOCAL_RANK>`` and writes its own manifest part; ranks never talk to each other, so a
crashed rank only costs its own fields (rerun: finished fields are skipped).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, TypeVar

__all__ = ["RankInfo", "rank_info", "shard"]

T = TypeVar("T")


@dataclass(frozen=True)
class RankInfo:
    """The place of this process among the inference workers."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def rank_info() -> RankInfo:
    """Rank, world size and local rank from the ``torchrun`` environment (0, 1, 0 without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return RankInfo(rank=rank, world_size=world, local_rank=local)


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The items of worker ``rank`` out of ``world_size``: ``items[rank::world_size]``.

    Over all ranks every item appears exactly once, and the shares differ by at most one.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    return list(items[rank::world_size])
