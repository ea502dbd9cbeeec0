"""The Sampler that feeds a DataLoader with the pruner's kept set for the current epoch.

Dynamic data pruning (Raju et al., arXiv 2111.12621; EMP, arXiv 2408.16031; InfoBatch,
arXiv 2303.04947): the set changes every epoch, so the sampler reads it from the pruner each time
the DataLoader creates an iterator, i.e. after ``pruner.set_epoch(epoch)``. ``FoldedBatchSampler``
batches it so that no kept image is dropped: a trailing batch of one joins the batch before it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from torch import Tensor
from torch.utils.data import BatchSampler, Sampler

from ssl_emp.distributed import shard, world_info
from ssl_emp.errors import ConfigError


@runtime_checkable
class KeptSetSource(Protocol):
    """What a ``PrunedSampler`` reads from its pruner (``DynamicPruner`` is one): the sampler
    depends on these three calls only, not on the pruner's module."""

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch``'s kept set (idempotent per epoch)."""

    def epoch_order(self) -> Tensor:
        """The current epoch's kept indices in this epoch's seeded order, the same on every rank."""

    def epoch_size(self) -> int:
        """The number of indices ``epoch_order`` holds (or will hold for the first epoch)."""


class PrunedSampler(Sampler[int]):
    """Yields this rank's share of the current epoch's kept indices in a seeded random order.

    The order is drawn from a generator seeded by (seed, epoch), identical on every rank; the
    list is sharded like DistributedSampler (padded by repeating from the start, rank::world).
    Rank and world size default to torch.distributed's, read at iteration time so the sampler
    may be created before the process group.
    """

    def __init__(self, pruner: KeptSetSource, rank: int | None = None, world_size: int | None = None) -> None:
        if (rank is None) != (world_size is None):
            raise ConfigError(f"give both rank and world_size or neither, got {rank}, {world_size}")
        if world_size is not None and not (
            isinstance(world_size, int) and isinstance(rank, int) and 0 <= rank < world_size
        ):
            raise ConfigError(f"need 0 <= rank < world_size, got rank={rank}, world={world_size}")
        self._pruner = pruner
        self._rank = rank
        self._world = world_size

    def _rank_world(self) -> tuple[int, int]:
        if self._world is not None and self._rank is not None:
            return self._rank, self._world
        return world_info()

    def set_epoch(self, epoch: int) -> None:
        """Same as ``pruner.set_epoch`` (for loops written for DistributedSampler)."""
        self._pruner.set_epoch(epoch)

    def indices(self) -> Tensor:
        """This rank's indices for the current epoch, in iteration order."""
        rank, world = self._rank_world()
        return shard(self._pruner.epoch_order(), rank, world)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        _, world = self._rank_world()
        return math.ceil(self._pruner.epoch_size() / world)


class FoldedBatchSampler(BatchSampler):
    """Batches of ``sampler``'s indices in order; a trailing batch of one joins the previous batch.

    A batch of one has no in-batch negatives and breaks batch norm, yet dropping it would leave a
    kept image untrained and uncounted. Under DDP every rank holds the same number of indices
    (``PrunedSampler`` pads like DistributedSampler), so every rank folds alike and the ranks
    keep stepping in lockstep with equal batch sizes.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int) -> None:
        if not (isinstance(batch_size, int) and batch_size >= 2):
            raise ConfigError(f"batch_size must be an integer >= 2, got {batch_size!r}")
        super().__init__(sampler, batch_size, drop_last=False)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(self.sampler)
        starts = list(range(0, len(order), self.batch_size))
        if len(starts) > 1 and len(order) - starts[-1] == 1:
            starts.pop()
        for start, end in zip(starts, [*starts[1:], len(order)], strict=False):
            yield order[start:end]

    def __len__(self) -> int:
        full, rest = divmod(len(self.sampler), self.batch_size)  # type: ignore[arg-type]
        return full + (rest > 1 or (rest == 1 and full == 0))
