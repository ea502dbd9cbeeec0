"""The junk probe: a fixed share of the training images replaced by pixel-shuffled copies (docs/method.md)."""

from __future__ import annotations

import torch
from torch import Tensor

from ssl_emp.data.datasets import IndexedImages
from ssl_emp.data.source import ImageSource
from ssl_emp.errors import ConfigError


def junk_indices(n: int, fraction: float, gen: torch.Generator | None = None) -> Tensor:
    """The sorted indices ``inject_junk`` replaces among ``n`` training images: fixed by seed 0, so
    an analysis of a finished run can tell its junk images from the clean ones."""
    gen = torch.Generator().manual_seed(0) if gen is None else gen
    return torch.randperm(n, generator=gen)[: round(fraction * n)].sort().values


def inject_junk(ds: ImageSource, fraction: float) -> tuple[IndexedImages, Tensor]:
    """Replace a fixed (seed 0) ``fraction`` of the images by pixel-shuffled copies of themselves.

    A junk probe for selection scores: each junk image keeps its original's colour histogram (so
    no brightness shortcut gives it away) but none of its structure. Returns the new set and the
    boolean junk mask; labels stay as they were (the kNN bank uses the clean set).
    """
    held = ds.stacked()
    if held is None:
        raise ConfigError("data.inject_noise needs the training images held in memory at one size "
                          "(data.in_memory=true, images no larger than data.image_size)")
    gen = torch.Generator().manual_seed(0)
    junk_idx = junk_indices(len(ds), fraction, gen)
    images = held.clone()
    flat = images[junk_idx].flatten(2)  # [k, 3, H*W]
    # One pixel permutation per image, shared by its three channels (pixels move, colours stay).
    perm = torch.rand(flat.shape[0], flat.shape[2], generator=gen).argsort(dim=1)
    images[junk_idx] = flat.gather(2, perm[:, None, :].expand(-1, 3, -1)).view(-1, *images.shape[1:])
    mask = torch.zeros(len(ds), dtype=torch.bool)
    mask[junk_idx] = True
    return IndexedImages(images, ds.labels, ds.classes), mask
