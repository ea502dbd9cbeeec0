"""torch.distributed helpers: rank info, the all-gather of per-sample statistics, sharding.

Every rank keeps an identical copy of the state table (EMP_SSL.md (the method spec; summary in README "Method"), "Distributed
training"), so each step's (index, loss, align) from all ranks is gathered and applied everywhere.
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


def all_gather_batch(idx: Tensor, loss: Tensor, align: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Concatenate every rank's (idx, loss, align) in rank order (CPU int64/float64 in and out).

    Batches may differ in size across ranks (the last batch), so each rank pads to the largest
    size and a validity mask built from the gathered sizes drops the padding rows.
    """
    world = dist.get_world_size()
    device = _comm_device()
    size = torch.tensor([idx.numel()], dtype=torch.int64, device=device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes_t = torch.cat(sizes).cpu()
    width = int(sizes_t.max())
    # One float64 message instead of three: indices < 2**53 are exact in float64.
    packed = torch.zeros((width, 3), dtype=torch.float64)
    packed[: idx.numel()] = torch.stack([idx.to(torch.float64), loss, align], dim=1)
    packed = packed.to(device)
    parts = [torch.empty_like(packed) for _ in range(world)]
    dist.all_gather(parts, packed)
    rows = torch.stack(parts).cpu()  # [world, width, 3]
    valid = torch.arange(width).unsqueeze(0) < sizes_t.unsqueeze(1)
    real = rows[valid]
    return real[:, 0].to(torch.int64), real[:, 1].contiguous(), real[:, 2].contiguous()


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
