"""MoCo v2 (Chen et al. 2020, arXiv 2003.04297): momentum key encoder and a queue of negatives."""

from __future__ import annotations

import copy
import math

import torch
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils import dist as lightly_dist
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_emp.losses import moco_info_nce_per_sample
from ssl_emp.models.contract import CONTRASTIVE_SIGNALS, contrastive_outputs
from ssl_emp.settings import ModelConfig


class KeyQueue(nn.Module):
    """FIFO of MoCo negatives, lightly's ``MemoryBankModule`` semantics (random unit rows at start;
    a batch that reaches the end fills it and the rest is dropped; keys of all ranks when gathered).

    lightly keeps the write position in a device tensor and reads it with ``int()`` every step, a
    host sync; here it is a Python int (checkpointed by ``MoCo``'s extra state).
    """

    def __init__(self, size: int, dim: int, gather_distributed: bool = False):
        super().__init__()
        self.register_buffer("bank", F.normalize(torch.randn(size, dim), dim=1), persistent=False)
        self.ptr = 0
        self.gather_distributed = gather_distributed

    @torch.no_grad()
    def forward(self, keys: Tensor, update: bool) -> Tensor:
        """The queue before ``keys`` are enqueued (a copy), then enqueue them if ``update``."""
        queue = self.bank.clone()
        if update:
            if self.gather_distributed and lightly_dist.world_size() > 1:
                keys = torch.cat(lightly_dist.gather(keys.contiguous()))
            n = min(keys.shape[0], self.bank.shape[0] - self.ptr)
            self.bank[self.ptr:self.ptr + n] = keys[:n]
            self.ptr = 0 if self.ptr + n >= self.bank.shape[0] else self.ptr + n
        return queue


class MoCo(nn.Module):
    """MoCo v2: query encoder, momentum key encoder, a queue of negatives.

    The queue is training state, so it enters ``state_dict()`` (and every checkpoint) through
    torch's extra-state hook.
    """

    num_views = 2
    needs_labels = False
    objective = "contrastive"
    signals = CONTRASTIVE_SIGNALS
    config_keys = ("proj_hidden_dim", "proj_out_dim", "temperature", "queue_size", "momentum_start", "momentum_end")
    augment_preset = "mocov2"  # augment.preset auto: lightly's MoCo v2 transform

    def __init__(self, backbone: nn.Module, cfg: ModelConfig, gather_distributed: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = MoCoProjectionHead(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.head_momentum = copy.deepcopy(self.head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.head_momentum)
        self.queue = KeyQueue(cfg.queue_size, cfg.proj_out_dim, gather_distributed)
        self.temperature = cfg.temperature
        self.momentum_start, self.momentum_end = cfg.momentum_start, cfg.momentum_end

    @classmethod
    def from_config(cls, backbone: nn.Module, cfg: ModelConfig, *, gather_distributed: bool = False,
                    num_classes: int | None = None) -> MoCo:
        """The registry's constructor (labels, hence ``num_classes``, are not used)."""
        return cls(backbone, cfg, gather_distributed)

    def get_extra_state(self) -> dict[str, Tensor]:
        return {"queue": self.queue.bank.clone(), "queue_ptr": torch.tensor([self.queue.ptr])}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        self.queue.bank.copy_(state["queue"])
        self.queue.ptr = int(state["queue_ptr"])

    @torch.no_grad()
    def momentum_update(self, m: float) -> None:
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.head, self.head_momentum, m)

    def on_train_step(self, progress: float) -> None:
        """Momentum encoder update, momentum on a cosine from ``momentum_start`` to ``momentum_end``."""
        m = self.momentum_end - (self.momentum_end - self.momentum_start) * (math.cos(math.pi * progress) + 1) / 2
        self.momentum_update(m)

    def forward(self, view1: Tensor, view2: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        q1, q2 = self.head(self.backbone(view1)), self.head(self.backbone(view2))
        with torch.no_grad():
            k1 = self.head_momentum(self.backbone_momentum(view1))
            k2 = self.head_momentum(self.backbone_momentum(view2))
        # The bank returns its contents before this batch's keys are enqueued.
        queue = self.queue(torch.cat([k1, k2]).float(), update=self.training)
        return contrastive_outputs(moco_info_nce_per_sample(q1, q2, k1, k2, queue, self.temperature))
