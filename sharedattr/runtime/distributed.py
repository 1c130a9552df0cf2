"""Scale-out on ``torch.distributed``: one process per rank, work items dealt out round-robin.

``torchrun --nproc-per-node K -m sharedattr run CONFIG --out DIR`` starts K processes with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment.
:func:`ranks_from_environment` joins them into one process group (gloo on the CPU, NCCL on
CUDA, each rank on its own GPU ``cuda:LOCAL_RANK``). The pipeline then:

1. fits on rank 0 (the others wait, then load the saved model: a shared output folder);
2. matches on every rank (cheap, deterministic: every rank gets the same pairs);
3. deals the work items (method × block of pairs; synthesizer × neuron) round-robin: each
   rank computes and writes its own items into ``work/`` (atomically, one file per item);
4. after a barrier, rank 0 merges: it reads every item back (computing any that is missing,
   e.g. on a folder that is not shared) and writes the same outputs a single process writes.

A single process (no ``WORLD_SIZE``, or 1) is :data:`SINGLE`: no process group, no barriers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

from sharedattr.runtime.errors import UserError

T = TypeVar("T")
TIMEOUT_ENV = "SHAREDATTR_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 6 * 3600  # rank 0 fits while the others wait at a barrier: allow long fits


@dataclass(frozen=True)
class Ranks:
    """This process's place among ``world`` processes; ``rank`` 0 is the one that writes outputs."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def owns(self, item: int) -> bool:
        """Whether work item number ``item`` (0, 1, 2, … in a fixed order) is this rank's (round-robin)."""
        return item % self.world == self.rank

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items`` (listed in the same order on every rank): those it :meth:`owns`."""
        return [item for i, item in enumerate(items) if self.owns(i)]

    def barrier(self) -> None:
        """Wait until every rank gets here (nothing to wait for in a single process)."""
        if self.distributed and torch.distributed.is_initialized():
            torch.distributed.barrier()

    def share_then_wait(self, items: Sequence[T], compute: Callable[[list[T]], Any]) -> list[Any]:
        """Several ranks: ``compute`` this rank's :meth:`share` of ``items``, then wait for every rank; each rank's
        ``compute`` result comes back, in rank order, on every rank (:meth:`gather`). One process: nothing is
        computed here and ``[]`` comes back (it computes every item itself). The engine and the synthesis stage
        deal out their work items so; rank 0 then reads every item from the shared store."""
        if not self.distributed:
            return []
        return self.gather(compute(self.share(items)))

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (a picklable object of this program's own making), in rank order, on every rank."""
        if not (self.distributed and torch.distributed.is_initialized()):
            return [value]
        values: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(values, value)
        return values


SINGLE = Ranks()


def environment_world() -> tuple[int, int, int]:
    """``(rank, world, local_rank)`` from the launcher's environment (torchrun, or SLURM through torchrun)."""

    def number(name: str, default: int) -> int:
        value = os.environ.get(name, "")
        try:
            return int(value) if value else default
        except ValueError:
            raise UserError(
                f"environment variable {name}={value!r} is not an integer; launch with torchrun "
                "(it sets RANK, WORLD_SIZE and LOCAL_RANK)"
            ) from None

    world = number("WORLD_SIZE", 1)
    rank = number("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"environment: RANK={rank} is not in [0, WORLD_SIZE={world}); launch with torchrun")
    return rank, world, number("LOCAL_RANK", rank)


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` when distributed; others are unchanged."""
    if device.type != "cuda" or not ranks.distributed:
        return device
    if ranks.local_rank >= torch.cuda.device_count():
        raise UserError(
            f"LOCAL_RANK {ranks.local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
            "start at most that many processes per node (torchrun --nproc-per-node)"
        )
    return torch.device("cuda", ranks.local_rank)


@contextmanager
def ranks_from_environment(device: torch.device) -> Iterator[Ranks]:
    """Join the process group the launcher describes (or none), yield this process's :class:`Ranks`, leave it.

    The backend follows ``device``: NCCL for CUDA, gloo otherwise. Barriers time out after
    ``$SHAREDATTR_DIST_TIMEOUT`` seconds (default 6 h, since the other ranks wait while rank 0 fits).
    """
    rank, world, local_rank = environment_world()
    if world == 1:
        yield SINGLE
        return
    ranks = Ranks(rank, world, local_rank)
    if torch.distributed.is_initialized():  # the caller owns the group
        yield ranks
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(rank_device(device, ranks))
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S))
    torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timeout)
    try:
        yield ranks
    finally:
        torch.distributed.destroy_process_group()
