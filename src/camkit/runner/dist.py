"""The ranks of a run: torch.distributed when launched by ``torchrun``, else one process.

Example:
    >>> ranks = setup_ranks(torch.device("cpu"))  # no WORLD_SIZE in the environment: one process
    >>> ranks.rank, ranks.world, ranks.broadcast("same")
    (0, 1, 'same')
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = ["Ranks", "setup_ranks"]

_T = TypeVar("_T")


@dataclass
class Ranks:
    """This process's rank among ``world`` processes (``local_world`` of them on this node)."""

    rank: int = 0
    world: int = 1
    local_world: int = 1
    owned: bool = False

    def broadcast(self, value: _T) -> _T:
        """Rank 0's ``value`` on every rank (a picklable object)."""
        if self.world == 1:
            return value
        box: list[_T] = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: _T) -> list[_T]:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.world == 1:
            return [value]
        found: list[Any] = [None] * self.world
        dist.all_gather_object(found, value)
        return found

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group if :func:`setup_ranks` created it."""
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()
            self.owned = False


def setup_ranks(device: torch.device) -> Ranks:
    """Join the process group of a ``torchrun`` launch (``WORLD_SIZE`` > 1), or use the caller's.

    The group is created with ``nccl`` when the model runs on CUDA, else ``gloo``, from
    torchrun's environment (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``).

    Args:
        device: where this rank's model runs (a CUDA device becomes the current one).

    Returns:
        The ranks; :meth:`Ranks.close` destroys a group created here.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), local_world, owned=False)
    if world <= 1:
        return Ranks()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed: run one process")
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), local_world, owned=True)
