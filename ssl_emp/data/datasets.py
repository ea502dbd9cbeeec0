"""The indexed data sets: every training sample is ``(index, uint8 image [3, H, W])``, the index
being what the pruner keys its per-sample table on."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ssl_emp.data.decode import read_image, resize_square
from ssl_emp.data.folder import fits_in_memory
from ssl_emp.errors import ConfigError


class IndexedImages(Dataset):
    """Decoded uint8 images held in memory; yields ``(index, image)``."""

    def __init__(self, images: Tensor, labels: Tensor | None = None, classes: list[str] | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ConfigError(f"images must be uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self.labels = labels
        self.classes = classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[int, Tensor]:
        return index, self.images[index]


class IndexedImageFiles(Dataset):
    """Images decoded on access (sets too large to hold in RAM); yields ``(index, image)``.

    Each image is resized to a square ``image_size`` so batches stack; the random resized crop of
    the view pipeline then works on that square.
    """

    def __init__(self, files: list[str], labels: Tensor | None, classes: list[str] | None, image_size: int):
        self.files = files
        self.labels = labels
        self.classes = classes
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[int, Tensor]:
        return index, resize_square(read_image(self.files[index])[None], self.image_size)[0]


class Labelled(Dataset):
    """``(image, label)`` view of an indexed data set, for feature extraction."""

    def __init__(self, dataset: IndexedImages | IndexedImageFiles):
        if dataset.labels is None:
            raise ConfigError("this data set has no labels; kNN and linear evaluation need labelled images")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.dataset[index][1], int(self.dataset.labels[index])


@dataclass
class DataSplits:
    train: IndexedImages | IndexedImageFiles  # what pretraining iterates over
    bank: IndexedImages | IndexedImageFiles | None  # labelled training images for kNN / probe
    test: IndexedImages | IndexedImageFiles | None  # the validation split when val_fraction > 0
    test_is_validation: bool = False
    junk: Tensor | None = None  # bool mask over ``train``: images replaced by data.inject_noise
    # Redundancy probe: per training sample, the index into ``bank`` (the U unique images) of the
    # image it is a copy of (``redundant_layout``); None without data.redundancy.
    unique_of: Tensor | None = None


# ----------------------------------------------------------------------------- helpers


def check_fits(n: int, size: int, what: str) -> None:
    """Refuse a held-in-memory split whose decoded uint8 images would not fit, before allocating them."""
    fits, text = fits_in_memory(n * 3 * size * size)
    if not fits:
        raise ConfigError(f"{what} at data.image_size={size} ({n} images decoded: {text}) does not fit in memory: "
                          "choose a smaller data.image_size")


def take(ds: IndexedImages | IndexedImageFiles, keep: Tensor) -> IndexedImages | IndexedImageFiles:
    labels = None if ds.labels is None else ds.labels[keep]
    if isinstance(ds, IndexedImageFiles):
        return IndexedImageFiles([ds.files[i] for i in keep.tolist()], labels, ds.classes, ds.image_size)
    return IndexedImages(ds.images[keep], labels, ds.classes)


def loader_generator(seed: int = 0) -> torch.Generator:
    """A DataLoader's own generator. Without one, torch draws the workers' base seed from the global
    RNG each time an iterator starts: once per run with persistent workers, once per epoch without
    them, again after a resume. That draw shifts the augmentations' stream, so a run's result would
    depend on ``data.num_workers`` and a resumed run would differ from the uninterrupted one."""
    return torch.Generator().manual_seed(seed)
