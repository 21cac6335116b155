"""torchrun support: rank and world size from the environment, sums across ranks, and the one
way a job shares what rank 0 alone decides or reads (the run folder's name, a stage's result,
a checkpoint) with every rank, errors included, so that no rank waits for another that failed."""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device_type: str) -> DistContext:
    """Join the process group that torchrun describes in RANK/WORLD_SIZE; a single process
    (no such variables) runs without one. Joining again returns the same context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def all_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.enabled:
        values = values.clone()
        dist.all_reduce(values)
    return values


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def on_main(read: Callable[[], T], ctx: DistContext) -> T:
    """`read()` run on rank 0 alone, its value (or the error it raised) given to every rank.

    Files rank 0 wrote are read by rank 0 only: the other ranks need not see the same disk,
    and an error (a missing checkpoint, a folder already taken) ends every rank with the same
    message at once instead of leaving them waiting in the next collective."""
    if not ctx.enabled:
        return read()
    box: list = [None]
    if ctx.is_main:
        try:
            box[0] = (True, read())
        except Exception as e:  # handed to every rank, raised there
            box[0] = (False, portable(e))
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def from_main(value: T, ctx: DistContext) -> T:
    """Rank 0's `value` on every rank (e.g. a name made from the clock, which ranks may read apart)."""
    return on_main(lambda: value, ctx)


def portable(error: Exception) -> Exception:
    """`error` if it survives pickling (to reach the other ranks), else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def rank_share(total: int, ctx: DistContext) -> int:
    """Batches per rank when `total` batches are taken in all (0 stays 0: all of them). The ranks'
    shards interleave one sample order, so with `total` a multiple of the world size the ranks
    together see the images one process would."""
    return math.ceil(total / ctx.world_size) if total else 0


# A rank that fails with a readable error leaves it in torchrun's store before it exits, so
# that the ranks whose next collective then breaks (on other nodes: torchrun stops those on
# the failing rank's own node) end with that message instead of a transport traceback.
FAILURE_KEY = "lowres/failure"
STORE_TIMEOUT = timedelta(seconds=5)


def torchrun_store() -> dist.TCPStore | None:
    """A client of the key-value store torchrun's agent serves to its ranks, if this process
    has a process group (and so such a store) at all."""
    if not (dist.is_available() and dist.is_initialized()) or "MASTER_ADDR" not in os.environ:
        return None
    try:
        return dist.TCPStore(
            os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=STORE_TIMEOUT
        )
    except (RuntimeError, ValueError):  # the agent is gone: nothing to tell or read
        return None


def report_failure(message: str) -> None:
    store = torchrun_store()
    if store is not None:
        store.set(FAILURE_KEY, f"{message} (rank {dist.get_rank()})")


def failure_elsewhere() -> str | None:
    """The message of the rank that failed first, if one reported it."""
    store = torchrun_store()
    try:
        return store.get(FAILURE_KEY).decode() if store is not None and store.check([FAILURE_KEY]) else None
    except RuntimeError:
        return None


def leave_process_group() -> None:
    """Leave torchrun's process group, if this process joined one: a process that exits inside
    it aborts in the group's destructor instead of exiting with its own code."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
