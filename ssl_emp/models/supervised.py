"""The supervised positive control: backbone + linear classifier, cross-entropy on one view."""

from __future__ import annotations

from torch import Tensor, nn

from ssl_emp.errors import ConfigError
from ssl_emp.losses import cross_entropy_per_sample
from ssl_emp.settings import ModelConfig


class Supervised(nn.Module):
    """Backbone + linear classifier trained with cross-entropy on one augmented view.

    The EMP paper's image-classification setting (Xiao et al., arXiv 2408.16031) and Raju et al.'s
    (arXiv 2111.12621): the positive control in which loss-based selection is expected to matter.
    Returns the per-sample loss and the prediction entropy, the supervised EMP memory signal.
    """

    num_views = 1
    needs_labels = True
    objective = "supervised"
    signals = ("entropy",)
    config_keys = ()  # the backbone's keys only
    augment_preset = "supervised"  # augment.preset auto: the CIFAR classification recipe

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(backbone.num_features, num_classes)

    @classmethod
    def from_config(cls, backbone: nn.Module, cfg: ModelConfig, *, gather_distributed: bool = False,
                    num_classes: int | None = None) -> Supervised:
        """The registry's constructor: ``num_classes`` from the labelled training set."""
        if not num_classes or num_classes < 2:
            raise ConfigError("algorithm 'supervised' needs a labelled training set with at least 2 classes")
        return cls(backbone, num_classes)

    def forward(self, view: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        if labels is None:
            raise ConfigError("the supervised objective needs labels")
        loss, entropy = cross_entropy_per_sample(self.classifier(self.backbone(view)), labels)
        return {"loss": loss, "entropy": entropy}

    def on_train_step(self, progress: float) -> None:
        """Nothing per step (the contract's hook; MoCo uses it for its momentum encoder)."""
