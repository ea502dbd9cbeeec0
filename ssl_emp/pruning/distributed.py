"""torch.distributed helpers: rank info, the all-gather of per-sample statistics, sharding.

Every rank keeps an identical copy of the state table (EMP_SSL.md, the method spec, "Distributed
training"), so every step's (index, loss, align, entropy) from all ranks is gathered and applied
everywhere; the pruner gathers a whole epoch's steps at once, in the order per-step gathers give.
Dynamic data pruning after Raju et al. (arXiv 2111.12621) and EMP (arXiv 2408.16031).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor


def world_info() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when torch.distributed is absent or not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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
