"""torch.distributed in one place: joining and leaving the process group, rank and world size.

A run launched by ``torchrun`` (which sets ``WORLD_SIZE`` > 1) trains with DDP; anything else is a
single process, and every helper here then answers as rank 0 of a world of one.
"""

from __future__ import annotations

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
