"""The model contract: what the training loop knows of a model, and how a model class is registered.

The loop (``ssl_emp.train``) knows a model only through ``PretrainModel`` (solo-learn style: the
method owns its per-step extras), so that another objective plugs into the same loop:

- ``backbone``: the encoder that is evaluated, exported and checkpointed;
- ``num_views``: how many augmented views of each image ``forward`` takes;
- ``needs_labels``: whether ``forward`` needs the images' class labels;
- ``objective``: ``"contrastive"`` or ``"supervised"``, the pruner's objective (how EMP scores);
- ``signals``: the per-sample pruner signals ``forward`` returns besides the loss, each a name the
  pruning state knows (``ssl_emp.pruning.state.SIGNAL_SPECS``); the loop builds its
  ``DynamicPruner(signals=model.signals)``, which then accepts exactly these names;
- ``forward(*views, labels=None) -> dict``: ``"loss"``, the per-sample loss [B] (float32, with
  grad), plus every declared signal, detached, [B]. Returning the per-sample loss from ``forward``
  lets a DDP wrapper's gradient hooks run through the ordinary call;
- ``on_train_step(progress)``: called before each step with the fraction of the run done.

A new method with a new signal therefore touches its model (which declares and returns it) and
the pruning state (which knows how to check and keep it), nothing in between.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from ssl_emp.settings import ModelConfig

#: What the contrastive models return besides the loss: the views' alignment (EMP's memory
#: signal) and each direction's loss (view 1 -> 2, 2 -> 1; SCAN marks them separately).
CONTRASTIVE_SIGNALS: tuple[str, ...] = ("align", "loss_12", "loss_21")


@runtime_checkable
class PretrainModel(Protocol):
    """A ``torch.nn.Module`` that the training loop can train (see the module docstring).

    The loop calls the module itself (``nn.Module.__call__`` runs ``forward``), through its DDP or
    ``torch.compile`` wrapper when there is one, so that the wrapper's hooks run.
    """

    backbone: nn.Module
    num_views: int
    needs_labels: bool
    objective: str
    signals: tuple[str, ...]

    def on_train_step(self, progress: float) -> None:
        """Per-step schedule (MoCo's momentum encoder), before the step; ``progress`` in [0, 1]."""

    def forward(self, *views: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """``{"loss": per-sample loss [B], <each declared signal>: detached [B]}``."""


class ModelClass(Protocol):
    """A model class as ``ssl_emp.models.registry`` builds it."""

    #: The ``model.*`` keys (``ModelConfig`` fields) it reads besides the backbone's; the registry
    #: range-checks these, and only these, for it.
    config_keys: tuple[str, ...]
    #: The view preset ``augment.preset: auto`` resolves to (lightly's transform for the method).
    augment_preset: str

    def from_config(self, backbone: nn.Module, cfg: ModelConfig, *, gather_distributed: bool,
                    num_classes: int | None) -> PretrainModel:
        """The model around ``backbone``; ``num_classes`` from the data set (None: unlabelled)."""


def contrastive_outputs(result: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
    """``forward``'s dict from a contrastive loss function's ``(loss, align)`` result.

    The losses in ``ssl_emp.losses`` return a ``PerSampleLoss`` that also carries both directions'
    losses. A function returning a plain pair (a test's stand-in) carries none; both directions are
    then the symmetrised loss, which is what SCAN reads of a one-direction objective, so the model
    still returns every signal it declares.
    """
    loss, align = result
    loss_12, loss_21 = getattr(result, "loss_12", None), getattr(result, "loss_21", None)
    if loss_12 is None or loss_21 is None:
        loss_12 = loss_21 = loss.detach()
    return {"loss": loss, "align": align, "loss_12": loss_12, "loss_21": loss_21}
