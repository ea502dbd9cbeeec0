"""SimCLR (Chen et al. 2020): backbone + lightly's projection head, NT-Xent over both views."""

from __future__ import annotations

import torch
from lightly.models.modules import SimCLRProjectionHead
from torch import Tensor, nn

from ssl_emp.losses import info_nce_per_sample
from ssl_emp.models.contract import CONTRASTIVE_SIGNALS, contrastive_outputs
from ssl_emp.settings import ModelConfig


class SimCLR(nn.Module):
    """SimCLR: backbone + ``SimCLRProjectionHead``, NT-Xent over the 2B views (of all ranks, if gathered)."""

    num_views = 2
    needs_labels = False
    objective = "contrastive"
    signals = CONTRASTIVE_SIGNALS
    config_keys = ("proj_hidden_dim", "proj_out_dim", "temperature")
    augment_preset = "simclr"  # augment.preset auto: lightly's SimCLR transform

    def __init__(self, backbone: nn.Module, cfg: ModelConfig, gather_distributed: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = SimCLRProjectionHead(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.temperature = cfg.temperature
        self.gather_distributed = gather_distributed

    @classmethod
    def from_config(cls, backbone: nn.Module, cfg: ModelConfig, *, gather_distributed: bool = False,
                    num_classes: int | None = None) -> SimCLR:
        """The registry's constructor (labels, hence ``num_classes``, are not used)."""
        return cls(backbone, cfg, gather_distributed)

    def on_train_step(self, progress: float) -> None:
        """Nothing to schedule."""

    def forward(self, view1: Tensor, view2: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        # One pass over both views: batch-norm statistics span all 2B views, as in SimCLR.
        z = self.head(self.backbone(torch.cat([view1, view2])))
        z1, z2 = z.chunk(2)
        return contrastive_outputs(info_nce_per_sample(z1, z2, self.temperature, self.gather_distributed))
