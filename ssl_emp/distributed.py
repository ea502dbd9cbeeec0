"""torch.distributed in one place: joining and leaving the process group, rank and world size, and
the collectives of the pruner (gathering per-sample statistics, sharding the kept set).

A run launched by ``torchrun`` (which sets ``WORLD_SIZE`` > 1) trains with DDP; anything else is a
single process, and every helper here then answers as rank 0 of a world of one. Every rank keeps
an identical copy of the pruner's table (docs/method.md, "Distributed training"), so every step's
(index, loss, align, entropy) from all ranks is gathered and applied everywhere; the pruner gathers
a whole epoch's steps at once, in the order per-step gathers give.
"""

from __future__ import annotations

import math
import os

import torch
import torch.distributed as dist
from torch import Tensor


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the process that writes files and evaluates."""
    return rank() == 0


def local_device() -> torch.device:
    """This process's GPU (``LOCAL_RANK`` under torchrun)."""
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def init() -> bool:
    """Join the process group when launched by ``torchrun``; True if this call started it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_initialized():
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(local_device())
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return True


def teardown(started: bool) -> None:
    """Leave the process group if ``init`` started it."""
    if started and is_initialized():
        dist.destroy_process_group()


def any_rank(flag: Tensor) -> bool:
    """True if ``flag`` (a bool tensor) is set on any rank; a host sync (and a collective under DDP)."""
    if world_size() > 1:
        flag = flag.to(torch.int32)
        if dist.get_backend() != "nccl":
            flag = flag.cpu()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag)


def world_info() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when torch.distributed is absent or not initialised."""
    return rank(), world_size()


def _comm_device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo (and a mixed "cpu:gloo,cuda:nccl") take CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _gather(t: Tensor, device: torch.device) -> Tensor:
    """all_gather of a same-shaped tensor from every rank, stacked in rank order, on the CPU."""
    t = t.to(device)
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t)
    return torch.stack(parts).cpu()


def all_gather_epoch(step_sizes: Tensor, rows: Tensor) -> Tensor:
    """Every rank's buffered rows, ordered step-major then rank (float64 CPU in and out).

    ``rows`` [T, C] holds this rank's rows step after step; ``step_sizes`` [S] how many rows each
    of its S steps contributed. The result is what gathering after every step in rank order and
    concatenating would give (step 0 of rank 0, step 0 of rank 1, ..., step 1 of rank 0, ...),
    also when ranks took different numbers of steps or a last batch was shorter.
    """
    world = dist.get_world_size()
    device = _comm_device()
    steps = _gather(torch.tensor([step_sizes.numel()], dtype=torch.int64), device).flatten()
    if int(steps.max()) == 0:  # same answer on every rank: all skip the remaining collectives
        return rows[:0]
    padded_sizes = torch.zeros(int(steps.max()), dtype=torch.int64)
    padded_sizes[: step_sizes.numel()] = step_sizes
    sizes = _gather(padded_sizes, device)  # [world, max steps]
    totals = sizes.sum(dim=1)
    width = int(totals.max())
    if width == 0:
        return rows[:0]
    packed = torch.zeros((width, rows.shape[1]), dtype=torch.float64)
    packed[: rows.shape[0]] = rows
    gathered = _gather(packed, device)  # [world, width, C]
    valid = torch.arange(width).unsqueeze(0) < totals.unsqueeze(1)
    real = gathered[valid]  # rank-major
    step_of_row = torch.cat([torch.repeat_interleave(torch.arange(sizes.shape[1]), sizes[r]) for r in range(world)])
    rank_of_row = torch.repeat_interleave(torch.arange(world), totals)
    # Stable: rows of one (step, rank) keep their batch order.
    order = torch.sort(step_of_row * world + rank_of_row, stable=True).indices
    return real[order]


def shard(order: Tensor, rank: int, world_size: int) -> Tensor:
    """This rank's part of ``order``, exactly like torch's DistributedSampler (drop_last=False).

    Pads to a multiple of ``world_size`` by repeating from the start, then takes rank::world.
    """
    n = order.numel()
    if world_size == 1 or n == 0:
        return order
    total = math.ceil(n / world_size) * world_size
    padded = order.repeat(math.ceil(total / n))[:total]
    return padded[rank::world_size]
