"""PyTorch Lightning integration of the dynamic pruner: ``PruningCallback``.

The callback does around a ``LightningModule`` what the ssl-emp training loop does around its
model (README, "Pruning in any training loop"): it selects each epoch's kept set, serves it through
a sampler, folds the epoch's per-sample statistics into the pruner's table at the epoch's end (a
collective under torch.distributed), stores the pruner in Lightning checkpoints and logs the
pruning diagnostics. The three lines of the integration::

    callback = PruningCallback(num_samples=len(data), method="emp", pruning_rate=0.5, epochs=E)
    # LightningModule.train_dataloader():
    #     return DataLoader(data, batch_sampler=callback.batch_sampler(batch_size))
    # LightningModule.training_step(batch, batch_idx):  with idx, view1, view2 = batch
    #     weights = callback.update(idx, loss=loss_i.detach(), align=align_i)
    #     return (weights * loss_i).mean()
    trainer = pl.Trainer(max_epochs=E, callbacks=[callback], use_distributed_sampler=False)

Photographs (images of their own sizes) take ``view_batch_sampler`` with ``CroppedViews``: views
cut from each image's own pixels, seeded by (seed, epoch, index).

``use_distributed_sampler=False`` is required under DDP: Lightning would otherwise wrap the
pruned sampler in a DistributedSampler. The sampler shards the kept set itself, reading rank and
world size from torch.distributed when the DataLoader is iterated.
"""

from __future__ import annotations

import numbers
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor
from torch.utils.data import DataLoader

from ssl_emp.data.views import EpochTagged
from ssl_emp.errors import ConfigError
from ssl_emp.pruning import DynamicPruner, PrunedSampler
from ssl_emp.pruning.registry import method_spec
from ssl_emp.pruning.sampler import FoldedBatchSampler

__all__ = ["PruningCallback"]


class PruningCallback(pl.Callback):
    """Owns a ``DynamicPruner`` and drives it from the Lightning fit loop.

    Pass either a ready ``pruner`` or the ``DynamicPruner`` arguments (``num_samples``, ``method``,
    ``pruning_rate``, ``epochs``, ``seed``, ``objective``, method parameters). ``epochs`` must be at
    least the Trainer's ``max_epochs`` (which must be set) and the train DataLoader's data set must
    be ``num_samples`` long: both are checked before the first batch.

    Hooks, and why:

    - ``on_fit_start``: selects epoch 0 (fresh runs only), so that the first DataLoader iterator,
      which Lightning creates before ``on_train_epoch_start``, already has a kept set to read.
    - ``on_train_epoch_start``: ``pruner.set_epoch(trainer.current_epoch)`` (idempotent).
    - ``on_validation_start`` (inside fit) and ``on_train_epoch_end``: ``pruner.flush()`` on every
      rank, so that a checkpoint written at validation end or at train epoch end holds the
      epoch's statistics. Callbacks' ``on_train_epoch_end`` runs before ``ModelCheckpoint``'s.
    - ``on_train_epoch_end`` then logs the diagnostics and already selects the next epoch: the
      selection depends only on (table, seed, epoch), so it is the set the next
      ``on_train_epoch_start`` would pick, but now it is in the checkpoint and in place before
      Lightning measures ``len(dataloader)`` for the next epoch (which it does before
      ``on_train_epoch_start``). Between epochs ``pruner.stats()["epochs_done"]`` hence counts
      the selected next epoch; the logged values are taken before that selection.
    - ``state_dict`` / ``load_state_dict``: the pruner's state in the checkpoint, so a run resumed
      at an epoch boundary trains the same kept sets as an uninterrupted one.

    The sampler reads the kept set when the DataLoader creates an iterator (every epoch in
    Lightning), so ``reload_dataloaders_every_n_epochs`` is not needed for the fixed-budget
    methods. InfoBatch and SCAN keep a different number of samples each epoch, and Lightning
    caches the number of batches, so with them ``reload_dataloaders_every_n_epochs=1`` is
    required (checked at fit start).

    Exact resumption holds for checkpoints taken at epoch ends; a checkpoint taken mid-epoch
    holds the statistics flushed so far, but the resumed epoch restarts its sampler from the
    beginning (Lightning cannot fast-forward a plain sampler).
    """

    def __init__(
        self,
        pruner: DynamicPruner | None = None,
        *,
        log: bool = True,
        prefix: str = "pruning/",
        **pruner_kwargs: Any,
    ) -> None:
        super().__init__()
        if pruner is not None and pruner_kwargs:
            raise ConfigError(f"give a pruner or DynamicPruner arguments, not both (got {sorted(pruner_kwargs)})")
        if pruner is None:
            if "num_samples" not in pruner_kwargs or "epochs" not in pruner_kwargs:
                raise ConfigError("PruningCallback needs a pruner or at least num_samples= and epochs=")
            pruner = DynamicPruner(**pruner_kwargs)
        if not isinstance(pruner, DynamicPruner):
            raise ConfigError(f"pruner must be a DynamicPruner, got {type(pruner).__name__}")
        self.pruner = pruner
        self.log_diagnostics = log
        self.prefix = prefix

    # ------------------------------------------------------------------ what the user's code calls
    def sampler(self) -> PrunedSampler:
        """A sampler for ``DataLoader(data, sampler=..., batch_size=B)``: this rank's kept indices."""
        return self.pruner.sampler()

    def batch_sampler(self, batch_size: int) -> FoldedBatchSampler:
        """A batch sampler for ``DataLoader(data, batch_sampler=...)``; no kept sample is dropped.

        A trailing batch of one joins the batch before it (``FoldedBatchSampler``): a batch of one
        has no negatives, and dropping it would leave a kept sample untrained.
        """
        return FoldedBatchSampler(self.pruner.sampler(), batch_size)

    def view_batch_sampler(self, batch_size: int) -> EpochTagged:
        """``batch_sampler`` with each index tagged by the pruner's epoch, for photographs:
        ``DataLoader(CroppedViews(source, views=2, size=S, scale=..., seed=...), batch_sampler=...)``
        yields ``(idx, uint8 [B, 2, 3, S, S])``, each view cut from the image's own pixels
        (``ssl_emp.data.views``) and seeded by (seed, epoch, index): the same views whatever
        ``num_workers`` is, and again after a resume. Flips and colours then run on the device
        (``ssl_emp.augment.view_augmentation(..., crop=False)``)."""
        return EpochTagged(self.batch_sampler(batch_size), lambda: self.pruner.epoch)

    def update(
        self, idx: Tensor, loss: Tensor, align: Tensor | None = None, entropy: Tensor | None = None,
        **signals: Tensor,
    ) -> Tensor:
        """``pruner.update``: buffer the batch's per-sample signals (any others the pruner was
        declared with, e.g. SCAN's ``loss_12`` / ``loss_21``), return its loss weights."""
        return self.pruner.update(idx, loss, align, entropy, **signals)

    # ------------------------------------------------------------------ Lightning hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        max_epochs, epochs = trainer.max_epochs, self.pruner.epochs
        # Lightning reads max_epochs=-1 (and None with max_steps) as "no limit": it would run past the
        # pruner's last planned epoch.
        if max_epochs is None or max_epochs < 0:
            raise ConfigError(f"Trainer(max_epochs={max_epochs}) trains without an epoch limit but the pruner plans "
                              f"epochs={epochs}: pass Trainer(max_epochs={epochs}) (or fewer)")
        if max_epochs > epochs:
            raise ConfigError(f"Trainer(max_epochs={max_epochs}) exceeds the pruner's epochs={epochs}")
        spec = method_spec(self.pruner.method)  # its own rate and reselected each epoch: the size changes
        if spec.own_rate and not spec.static and trainer.reload_dataloaders_every_n_epochs != 1:
            raise ConfigError(
                f"method {self.pruner.method!r} keeps a different number of samples each epoch: use "
                "Trainer(reload_dataloaders_every_n_epochs=1) so Lightning re-measures the DataLoader")
        # A restored pruner (callback state is loaded before on_fit_start) has its epoch already.
        if self.pruner.epoch < 0:
            self.pruner.set_epoch(0)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_loader(trainer)
        self.pruner.set_epoch(trainer.current_epoch)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # ModelCheckpoint saves at validation end when there is a validation loop; the same on
        # every rank, so this collective lines up. Not in the sanity check: nothing to flush yet.
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and self.pruner.epoch >= 0:
            self.pruner.flush()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.pruner.flush()  # every rank: a collective under torch.distributed
        if self.log_diagnostics:
            pl_module.log_dict(self.metrics(), on_step=False, on_epoch=True, rank_zero_only=True)
        following = trainer.current_epoch + 1
        if following < self.pruner.epochs and (trainer.max_epochs is None or following < trainer.max_epochs):
            self.pruner.set_epoch(following)

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        # Lightning dumps a checkpoint on every rank, so this flush (a collective) lines up; it is
        # a no-op after the end-of-epoch flush.
        self.pruner.flush()
        return {"pruner": self.pruner.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pruner.load_state_dict(state_dict["pruner"])

    # ------------------------------------------------------------------ reporting
    def metrics(self) -> dict[str, float]:
        """The epoch's scalar diagnostics and budget accounting, keys prefixed by ``prefix``."""
        stats = self.pruner.stats()
        values: dict[str, Any] = {
            **self.pruner.epoch_diagnostics(),
            "achieved_rate": stats["achieved_rate"],
            "target_rate": stats["target_rate"],
            "sample_visits": stats["sample_visits"],
            "optimizer_steps": stats["optimizer_steps"],
        }
        # Lists (histograms) and None (undefined correlations) are not scalars for a logger.
        return {
            f"{self.prefix}{key}": float(value) for key, value in values.items()
            if isinstance(value, numbers.Real) and not isinstance(value, bool)
        }

    def _check_loader(self, trainer: pl.Trainer) -> None:
        """Refuse a train DataLoader that does not draw from this pruner (e.g. Lightning's
        DistributedSampler replacing it) or whose data set is not ``num_samples`` long: it would train
        on data the pruner does not account for. Runs before the epoch's first batch is fetched."""
        loaders = trainer.train_dataloader
        if not isinstance(loaders, DataLoader):
            return  # a collection of loaders or a custom iterable: the user's responsibility
        batches = loaders.batch_sampler
        batches = batches.batches if isinstance(batches, EpochTagged) else batches
        sampler = getattr(batches, "sampler", None)
        if not isinstance(sampler, PrunedSampler):
            sampler = loaders.sampler
        if not (isinstance(sampler, PrunedSampler) and sampler._pruner is self.pruner):
            raise ConfigError(
                "the train DataLoader must draw from PruningCallback.sampler() or .batch_sampler(); "
                f"it uses {type(sampler).__name__} (under DDP pass Trainer(use_distributed_sampler=False))")
        # The pruner's indices address the data set: a longer one would leave indices >= num_samples
        # untrained without a word, a shorter one fail inside the DataLoader with an IndexError.
        try:
            size = len(loaders.dataset)
        except TypeError:  # a data set without __len__: nothing to compare
            return
        if size != self.pruner.num_samples:
            raise ConfigError(f"the train DataLoader's data set has {size} samples but the pruner was built for "
                              f"num_samples={self.pruner.num_samples}: pass num_samples=len(data set)")
