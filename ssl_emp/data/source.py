"""The data-source contract: what every data set the toolkit trains on is.

A source is one class: its length, ``read(index)`` (one uint8 RGB image [3, H, W] at its own size),
``labels`` (int64 [N] or None) and ``classes`` (names or None). Everything downstream (subsets, the
held-out split, pruning, ``curate``, the views, the evaluation transform) goes through these; a new
source is one file and one line in ``ssl_emp.data.registry.DATASETS``, whose ``fingerprint`` says what
identifies the data at ``data.data_dir`` before anything is decoded (what a resume or a benchmark
folder compares, ``ssl_emp.data.fingerprint``). Sources are ``Dataset``s yielding ``(index, image)``:
the index is what the pruner keys its per-sample table on.
"""

from __future__ import annotations

from torch import Tensor
from torch.utils.data import Dataset


class ImageSource(Dataset):
    """Base of every data source; subclasses set ``labels``/``classes`` and implement ``__len__``
    and ``read``."""

    labels: Tensor | None = None
    classes: list[str] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, index: int) -> Tensor:
        """Image ``index`` as uint8 RGB [3, H, W], at the size the source stores it."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[int, Tensor]:
        return index, self.read(index)

    def take(self, keep: Tensor) -> ImageSource:
        """The images at ``keep`` (int64 indices), in that order, as a source of their own."""
        return SubsetSource(self, keep)

    def stacked(self) -> Tensor | None:
        """Every image as one uint8 [N, 3, H, W] tensor when they are held in memory at one size
        (what the junk and redundancy probes rewrite); None otherwise."""
        return None

    def uniform_size(self) -> tuple[int, int] | None:
        """(H, W) of every image when all share it and that is known without reading them; else None.
        A source of ``image_size`` squares takes the batched on-device crop (``ssl_emp.augment``)."""
        stacked = self.stacked()
        return None if stacked is None else (stacked.shape[-2], stacked.shape[-1])


class SubsetSource(ImageSource):
    """Some images of another source, by index (what ``ImageSource.take`` returns by default)."""

    def __init__(self, source: ImageSource, keep: Tensor):
        self.source, self.keep = source, keep.long()
        self.labels = None if source.labels is None else source.labels[self.keep]
        self.classes = source.classes

    def __len__(self) -> int:
        return len(self.keep)

    def read(self, index: int) -> Tensor:
        return self.source.read(int(self.keep[index]))

    def take(self, keep: Tensor) -> ImageSource:
        return SubsetSource(self.source, self.keep[keep])

    def uniform_size(self) -> tuple[int, int] | None:
        return self.source.uniform_size()
