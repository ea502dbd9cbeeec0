"""Views cut from each image's own pixels, for sources of images other than ``image_size`` squares.

A photograph (any size, any aspect ratio) gets torchvision's ``RandomResizedCrop``: the crop box is
drawn relative to the image's own width and height (``ssl_emp.augment.resized_crop_boxes``: area
fraction in ``scale``, log-uniform aspect ratio, ten tries, the centre fallback) and resized to
``image_size``, antialiased when it shrinks. That runs here, in the DataLoader workers, one image at
a time (its size is its own); the flips and colour operations stay batched on the device. Each
image's boxes are drawn from a generator seeded by (seed, epoch, index), so the views do not depend
on the number of workers and a resumed run draws the ones the uninterrupted run would have.
Sources of ``image_size`` squares (CIFAR, digits) keep the batched on-device crop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler

from ssl_emp.augment import (
    CROP_RATIO,
    ColorJitter,
    Normalize,
    RandomGaussianBlur,
    RandomGrayscale,
    crop_scale,
    resized_crop_boxes,
    view_augmentation,
)
from ssl_emp.data.source import ImageSource
from ssl_emp.settings import AugmentConfig

# The device ops that change colours, not geometry: what the raw views stop before.
_COLOUR_OPS = (ColorJitter, RandomGrayscale, RandomGaussianBlur, Normalize)


def cuts_views(source: ImageSource, image_size: int) -> bool:
    """Whether ``source``'s views are cut here (its images are not all ``image_size`` squares)."""
    return source.uniform_size() != (image_size, image_size)


def view_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of image ``index``'s crops in ``epoch``: seeded by the three, well mixed."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def resized_view(image: Tensor, box: list[int], size: int) -> Tensor:
    """uint8 [3, H, W] cropped to ``box`` (x0, y0, w, h) and resized to ``size`` squared (bilinear,
    antialiased: torchvision's ``resized_crop`` on tensors)."""
    x0, y0, w, h = box
    crop = image[None, :, y0:y0 + h, x0:x0 + w].float()
    out = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)[0]


def cut_views(image: Tensor, views: int, size: int, scale: tuple[float, float], generator: torch.Generator,
              ratio: tuple[float, float] = CROP_RATIO) -> Tensor:
    """``views`` random resized crops of uint8 [3, H, W], boxes drawn on the image's own size: [V, 3, S, S]."""
    boxes = resized_crop_boxes(views, image.shape[-2], image.shape[-1], scale, ratio, generator=generator)
    return torch.stack([resized_view(image, box, size) for box in boxes.long().tolist()])


class CroppedViews(Dataset):
    """``(epoch, index)`` -> ``(index, uint8 [views, 3, S, S])``: the crops of a source's image."""

    def __init__(self, source: ImageSource, views: int, size: int, scale: tuple[float, float], seed: int):
        self.source, self.views, self.size, self.scale, self.seed = source, views, size, scale, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, Tensor]:
        epoch, index = key
        generator = view_generator(self.seed, epoch, index)
        return index, cut_views(self.source.read(index), self.views, self.size, self.scale, generator)


class EpochTagged(Sampler[list[tuple[int, int]]]):
    """A batch sampler's batches with each index tagged by the epoch (``epoch()`` read when an
    iteration starts, in the main process): what ``CroppedViews`` seeds each image's crops by."""

    def __init__(self, batches: Sampler[list[int]], epoch: Callable[[], int]):
        self.batches, self.epoch = batches, epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.epoch()
        return ([(epoch, i) for i in batch] for batch in self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def geometric_ops(pipeline: nn.Sequential) -> nn.Sequential:
    """The leading ops of a view pipeline up to its first colour operation (crop, flip, rotation)."""
    ops = []
    for op in pipeline:
        if isinstance(op, _COLOUR_OPS):
            break
        ops.append(op)
    return nn.Sequential(*ops)


def raw_views(source: ImageSource, indices: list[int], views: int, cfg: AugmentConfig, image_size: int,
              seed: int = 0, epoch: int = 0) -> Tensor:
    """uint8 [K, views, 3, S, S]: the training views of the images at ``indices`` after the crop and
    the flip (and rotation), before the colour operations; seeded by ``seed``, the global RNG left as it was.

    The same path as training: a photograph's crops cut as ``CroppedViews`` does in ``epoch``, an
    ``image_size`` square's by the on-device crop.
    """
    cut = cuts_views(source, image_size)
    ops = geometric_ops(view_augmentation(cfg, image_size, crop=not cut))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if cut:
            crops = CroppedViews(source, views, image_size, crop_scale(cfg, image_size), seed)
            batch = torch.stack([crops[(epoch, i)][1] for i in indices])  # [K, V, 3, S, S]
            out = [ops(batch[:, v]) for v in range(views)]
        else:
            images = torch.stack([source.read(i) for i in indices])
            out = [ops(images) for _ in range(views)]
    return torch.stack(out, dim=1).mul(255).round_().clamp_(0, 255).to(torch.uint8)
