"""Where a run executes: device choice, the optimizer table, and the versions / machine record.

Shared by the trainer, the evaluators and the benchmark scripts, so none of them imports the trainer.
"""

from __future__ import annotations

import os
import platform

import timm.optim
import torch
from torch import nn

from ssl_emp.config import OptimConfig
from ssl_emp.distributed import local_device
from ssl_emp.errors import ConfigError

TIMM_OPT = {"sgd": "momentum", "lars": "lars", "adamw": "adamw"}  # timm's "sgd" means Nesterov


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; under torchrun, this rank's GPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return local_device() if name == "cuda" else torch.device(name)


def scaled_lr(cfg: OptimConfig, world_size: int) -> float:
    """The linear scaling rule (Goyal et al. 2017): ``lr`` is per 256 images of global batch."""
    return cfg.lr * cfg.batch_size * world_size / 256


def build_optimizer(model: nn.Module, cfg: OptimConfig, world_size: int) -> torch.optim.Optimizer:
    """timm's optimizer factory (weight decay off for norms and biases) at the scaled learning rate."""
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
