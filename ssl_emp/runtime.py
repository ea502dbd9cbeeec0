"""Where a run executes: device choice, the optimizer table, and the versions / machine record.

Shared by the trainer, the evaluators and the benchmark scripts, so none of them imports the trainer.
"""

from __future__ import annotations

import os
import platform

import torch
from torch import nn

from ssl_emp.distributed import local_device
from ssl_emp.errors import ConfigError
from ssl_emp.settings import OptimConfig

#: optim.name -> timm's optimizer name (timm's "sgd" means Nesterov); its keys are the optimizers.
TIMM_OPT = {"sgd": "momentum", "lars": "lars", "adamw": "adamw"}
OPTIMIZERS: tuple[str, ...] = tuple(TIMM_OPT)
#: The ``device`` names of a config and of the CLI (``resolve_device`` also takes any torch device string).
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; under torchrun, this rank's GPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return local_device() if name == "cuda" else torch.device(name)


def available_cores() -> int:
    """The CPU cores this process may run on: its affinity mask (taskset, a cgroup cpuset, SLURM's
    allocation), not the machine's count, which ``os.cpu_count`` and torch's default go by."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity masks
        return os.cpu_count() or 1


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when set to a positive integer (torchrun sets 1 per process), else
    ``available_cores()``."""
    text = os.environ.get("OMP_NUM_THREADS", "")
    return int(text) if text.isdigit() and int(text) > 0 else available_cores()


def set_threads(threads: int | None) -> int:
    """Set torch's (and faiss's) CPU threads to ``threads``, or ``default_threads()`` for None; returns
    the number set. More threads than free cores make every step wait for the slowest one: on a
    shared machine, run several jobs at one thread each (docs/guide/performance.md)."""
    import faiss  # here: the CLI reads this module before any run

    n = threads or default_threads()
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)  # faiss's own OpenMP pool (the kNN), which torch's setting does not reach
    return n


# torch 2.14's CPU backward of a strided 1x1 convolution in channels_last corrupts the heap
# ("double free or corruption") when it has fewer than 16 input channels and the batch is odd
# (measured here: 4, 8 and 12 channels at batch 29/33/57/127 abort; >= 16 never did).
_CPU_CHANNELS_LAST_MIN_IN = 16


def memory_format(model: nn.Module, device: torch.device, channels_last: bool) -> torch.memory_format:
    """``channels_last`` (the tensor-core layout for bf16, 1.5x on this CPU) unless asked not to, or
    unless the model has a convolution that torch's CPU kernels cannot run safely in it."""
    if not channels_last:
        return torch.contiguous_format
    if device.type == "cpu":
        for conv in model.modules():
            if (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and max(conv.stride) > 1
                    and conv.in_channels < _CPU_CHANNELS_LAST_MIN_IN):
                return torch.contiguous_format
    return torch.channels_last


def scaled_lr(cfg: OptimConfig, world_size: int) -> float:
    """The linear scaling rule (Goyal et al. 2017): ``lr`` is per 256 images of global batch."""
    return cfg.lr * cfg.batch_size * world_size / 256


def build_optimizer(model: nn.Module, cfg: OptimConfig, world_size: int) -> torch.optim.Optimizer:
    """timm's optimizer factory (weight decay off for norms and biases) at the scaled learning rate."""
    import timm.optim  # here, not at the top: the CLI reads DEVICES from this module before any run

    return timm.optim.create_optimizer_v2(model, opt=TIMM_OPT[cfg.name], lr=scaled_lr(cfg, world_size),
                                          weight_decay=cfg.weight_decay, momentum=cfg.momentum)


def versions() -> dict[str, str]:
    import faiss
    import kornia
    import lightly
    import timm
    import torchvision

    import ssl_emp

    return {
        "ssl_emp": ssl_emp.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "lightly": lightly.__version__, "kornia": kornia.__version__, "timm": timm.__version__,
        "faiss": faiss.__version__, "python": platform.python_version(),
    }


def machine() -> str:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {gpu}"
