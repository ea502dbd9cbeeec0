"""Encoders: a timm backbone by name, a lightly projection head, and the contrastive objective.

``forward(view1, view2)`` returns the per-sample ``(loss, align)`` so that a DDP wrapper's
gradient hooks run through the ordinary call.
"""

from __future__ import annotations

import copy

import timm
import torch
from lightly.models.modules import MoCoProjectionHead, SimCLRProjectionHead
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import Tensor, nn

from ssl_emp.config import ModelConfig
from ssl_emp.errors import ConfigError
from ssl_emp.losses import info_nce_per_sample, moco_info_nce_per_sample


def build_backbone(name: str, cifar_stem: bool = False, **kwargs: object) -> nn.Module:
    """A timm model without classifier (``num_classes=0``): images -> pooled features.

    ``cifar_stem`` swaps the 7×7 stride-2 convolution and max-pool of a ResNet for a 3×3 stride-1
    convolution (SimCLR's CIFAR variant): at 32 px the original stem would discard 15/16 of the
    pixels before the first block. timm has no such option, hence the swap.
    """
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ConfigError(f"unknown backbone '{name}' (any timm model name, see timm.list_models())") from exc
        raise
    except TypeError as exc:
        raise ConfigError(f"backbone '{name}' rejects model.backbone_kwargs: {exc}") from exc
    if cifar_stem:
        if not isinstance(getattr(model, "conv1", None), nn.Conv2d) or not hasattr(model, "maxpool"):
            raise ConfigError(f"model.cifar_stem needs a timm ResNet with a single-conv stem; '{name}' has none")
        model.conv1 = nn.Conv2d(model.conv1.in_channels, model.conv1.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    return model


class SimCLR(nn.Module):
    """SimCLR: backbone + ``SimCLRProjectionHead``, NT-Xent over the 2B in-batch views."""

    def __init__(self, backbone: nn.Module, cfg: ModelConfig):
        super().__init__()
        self.backbone = backbone
        self.head = SimCLRProjectionHead(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.temperature = cfg.temperature

    def forward(self, view1: Tensor, view2: Tensor) -> tuple[Tensor, Tensor]:
        # One pass over both views: batch-norm statistics span all 2B views, as in SimCLR.
        z = self.head(self.backbone(torch.cat([view1, view2])))
        z1, z2 = z.chunk(2)
        return info_nce_per_sample(z1, z2, self.temperature)


class MoCo(nn.Module):
    """MoCo v2: query encoder, momentum key encoder, a queue of negatives (lightly's memory bank).

    lightly registers the bank as a non-persistent buffer; the queue is training state, so it
    enters ``state_dict()`` (and every checkpoint) through torch's extra-state hook.
    """

    def __init__(self, backbone: nn.Module, cfg: ModelConfig, gather_distributed: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = MoCoProjectionHead(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.head_momentum = copy.deepcopy(self.head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.head_momentum)
        self.queue = MemoryBankModule(size=(cfg.queue_size, cfg.proj_out_dim), gather_distributed=gather_distributed, feature_dim_first=False)
        self.temperature = cfg.temperature

    def get_extra_state(self) -> dict[str, Tensor]:
        return {"queue": self.queue.bank.clone(), "queue_ptr": self.queue.bank_ptr.clone()}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        self.queue.bank.copy_(state["queue"])
        self.queue.bank_ptr.copy_(state["queue_ptr"])

    @torch.no_grad()
    def momentum_update(self, m: float) -> None:
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.head, self.head_momentum, m)

    def forward(self, view1: Tensor, view2: Tensor) -> tuple[Tensor, Tensor]:
        q1, q2 = self.head(self.backbone(view1)), self.head(self.backbone(view2))
        with torch.no_grad():
            k1 = self.head_momentum(self.backbone_momentum(view1))
            k2 = self.head_momentum(self.backbone_momentum(view2))
        # The bank returns its contents before this batch's keys are enqueued.
        _, queue = self.queue(torch.cat([k1, k2]).float(), update=self.training)
        return moco_info_nce_per_sample(q1, q2, k1, k2, queue, self.temperature)


def build_model(algorithm: str, cfg: ModelConfig, gather_distributed: bool = False) -> SimCLR | MoCo:
    backbone = build_backbone(cfg.backbone, cfg.cifar_stem, **cfg.backbone_kwargs)
    if algorithm == "simclr":
        return SimCLR(backbone, cfg)
    if algorithm == "moco":
        return MoCo(backbone, cfg, gather_distributed)
    raise ConfigError(f"unknown algorithm '{algorithm}' (choose from simclr, moco)")


def load_backbone(path: str) -> nn.Module:
    """A backbone folder written by ``ssl-emp export`` (``config.json`` + ``model.safetensors``), in eval mode.

    Rebuilds ``config.json``'s architecture with its ``model_args`` through :func:`build_backbone`,
    so it also restores the CIFAR stem (``ssl_emp.cifar_stem``) that ``timm.create_model`` cannot.
    """
    import json
    from pathlib import Path

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    config_file, weights_file = folder / "config.json", folder / "model.safetensors"
    for file in (config_file, weights_file):
        if not file.is_file():
            raise ConfigError(f"{file} not found (an exported backbone folder holds config.json and model.safetensors)")
    try:
        config = json.loads(config_file.read_text())
        name, kwargs = config["architecture"], dict(config.get("model_args") or {})
        cifar_stem = bool((config.get("ssl_emp") or {}).get("cifar_stem", False))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{config_file} is not a timm model config: {exc!r}") from exc
    if kwargs.pop("num_classes", config.get("num_classes", 0)) != 0:
        raise ConfigError(f"{folder} holds a model with a classifier; load it with timm.create_model('local-dir:{folder}')")
    model = build_backbone(name, cifar_stem, **kwargs)
    try:
        model.load_state_dict(load_file(weights_file))
    except (SafetensorError, RuntimeError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{weights_file} does not hold the weights of {config_file}: {first}") from exc
    return model.eval()
