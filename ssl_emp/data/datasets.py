"""The sources of decoded images (``ssl_emp.data.source``): arrays in memory (one size), packed
images of varied sizes (in memory or memory-mapped), image files decoded on access; and the splits."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ssl_emp.data.decode import eval_view, read_image, store_image
from ssl_emp.data.folder import fits_in_memory
from ssl_emp.data.source import ImageSource
from ssl_emp.errors import ConfigError


class IndexedImages(ImageSource):
    """Decoded uint8 images of one size held in memory (an array source)."""

    def __init__(self, images: Tensor, labels: Tensor | None = None, classes: list[str] | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ConfigError(f"images must be uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self.labels = labels
        self.classes = classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def read(self, index: int) -> Tensor:
        return self.images[index]

    def take(self, keep: Tensor) -> IndexedImages:
        return IndexedImages(self.images[keep], None if self.labels is None else self.labels[keep], self.classes)

    def stacked(self) -> Tensor:
        return self.images


class PackedImages(ImageSource):
    """Decoded uint8 images of varied sizes in one flat buffer (in memory, or memory-mapped from
    the decoded-image cache): image i is ``data[offsets[i]:offsets[i + 1]]`` viewed as
    [3, *sizes[i]]. What a folder of photographs is held as, its aspect ratios kept."""

    def __init__(self, data: Tensor, sizes: Tensor, labels: Tensor | None = None, classes: list[str] | None = None):
        self.data, self.sizes = data, sizes.long()
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), (3 * self.sizes.prod(1)).cumsum(0)])
        if data.dtype != torch.uint8 or data.ndim != 1 or int(self.offsets[-1]) != data.numel():
            raise ConfigError(f"packed images: {data.numel()} bytes where their sizes need {int(self.offsets[-1])}")
        self.labels, self.classes = labels, classes

    @classmethod
    def pack(cls, images: list[Tensor], labels: Tensor | None = None, classes: list[str] | None = None) -> PackedImages:
        """Images of any sizes (uint8 [3, H, W]) packed into one buffer."""
        data = torch.cat([image.reshape(-1) for image in images]) if images else torch.zeros(0, dtype=torch.uint8)
        sizes = torch.tensor([tuple(image.shape[-2:]) for image in images], dtype=torch.long).view(-1, 2)
        return cls(data, sizes, labels, classes)

    def __len__(self) -> int:
        return len(self.sizes)

    def read(self, index: int) -> Tensor:
        h, w = self.sizes[index].tolist()
        return self.data[int(self.offsets[index]):int(self.offsets[index + 1])].view(3, h, w)

    def uniform_size(self) -> tuple[int, int] | None:
        if len(self.sizes) and bool((self.sizes == self.sizes[0]).all()):
            return int(self.sizes[0, 0]), int(self.sizes[0, 1])
        return None


class IndexedImageFiles(ImageSource):
    """Images decoded on access (sets too large to hold in RAM), at their ``stored_size``."""

    def __init__(self, files: list[str], labels: Tensor | None, classes: list[str] | None, image_size: int,
                 store_size: int | None = None):
        self.files = files
        self.labels = labels
        self.classes = classes
        self.image_size, self.store_size = image_size, store_size

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> Tensor:
        image = read_image(self.files[index], self.store_size)  # full size without store_size
        return store_image(image, self.image_size, self.store_size)

    def take(self, keep: Tensor) -> IndexedImageFiles:
        labels = None if self.labels is None else self.labels[keep]
        return IndexedImageFiles([self.files[i] for i in keep.tolist()], labels, self.classes, self.image_size,
                                 self.store_size)


class Labelled(Dataset):
    """``(image, label)`` view of a source, for feature extraction; with ``image_size``, each image
    through the evaluation view (``eval_view``: shorter side resized, centre crop)."""

    def __init__(self, dataset: ImageSource, image_size: int | None = None):
        if dataset.labels is None:
            raise ConfigError("this data set has no labels; kNN and linear evaluation need labelled images")
        self.dataset, self.image_size = dataset, image_size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.dataset.read(index)
        return (image if self.image_size is None else eval_view(image, self.image_size)), int(self.dataset.labels[index])


@dataclass
class DataSplits:
    train: ImageSource  # what pretraining iterates over
    bank: ImageSource | None  # labelled training images for kNN / probe
    test: ImageSource | None  # the validation split when val_fraction > 0
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


def loader_generator(seed: int = 0) -> torch.Generator:
    """A DataLoader's own generator. Without one, torch draws the workers' base seed from the global
    RNG each time an iterator starts: once per run with persistent workers, once per epoch without
    them, again after a resume. That draw shifts the augmentations' stream, so a run's result would
    depend on ``data.num_workers`` and a resumed run would differ from the uninterrupted one."""
    return torch.Generator().manual_seed(seed)
