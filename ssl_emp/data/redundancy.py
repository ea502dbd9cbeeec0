"""The redundancy probe: U unique images, a fraction d of them present c times as exact or near
copies (docs/method.md "Redundancy probe"), and its per-epoch diagnostics."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_emp.data.datasets import IndexedImages, check_fits
from ssl_emp.data.source import ImageSource
from ssl_emp.errors import ConfigError
from ssl_emp.settings import RedundancyConfig, duplicated_count

# Near-copies: a crop of at least 60 % of the area (aspect 3/4 to 4/3) resized back, and brightness
# and contrast factors within ±20 %. Every view preset already samples far stronger changes (crops
# down to 8 % (simclr) or 50 % (digits) of the area, brightness ±40 %), so a near-copy lies inside
# its original's augmentation orbit: it teaches the encoder nothing its original does not, i.e. it
# is redundant, yet it differs pixel by pixel, so only a score that sees content can find it.
NEAR_SCALE = (0.6, 1.0)
NEAR_RATIO = (3 / 4, 4 / 3)
NEAR_JITTER = 0.2


def redundant_layout(n: int, unique: int, dup_fraction: float, copies: int) -> tuple[Tensor, Tensor]:
    """(the sorted indices of the ``unique`` images drawn from a split of ``n``, ``unique_of``).

    ``unique_of[i]`` is the position among them of training sample i's image: samples 0..U−1 are
    the U images themselves, then each of the ⌊d·U⌋ duplicated ones (drawn among them) follows
    ``copies`` − 1 times. Fixed by seed 0, like the junk probe, so every run of a sweep trains the
    same set and an analysis of a finished run can rebuild it from the run's config alone.
    """
    if unique > n:
        raise ConfigError(f"data.redundancy.unique={unique} is more than the {n} images of the training split")
    gen = torch.Generator().manual_seed(0)
    chosen = torch.randperm(n, generator=gen)[:unique].sort().values
    duplicated = torch.randperm(unique, generator=gen)[:duplicated_count(unique, dup_fraction)].sort().values
    return chosen, torch.cat([torch.arange(unique), duplicated.repeat_interleave(copies - 1)])


def extra_copies(unique_of: Tensor) -> Tensor:
    """Bool mask of the samples that repeat an image an earlier sample already holds: the copies a
    perfect deduplication drops (in ``redundant_layout`` order, every sample from U on)."""
    n = len(unique_of)
    first = torch.full((int(unique_of.max()) + 1 if n else 0,), n, dtype=torch.long)
    first.scatter_reduce_(0, unique_of, torch.arange(n), reduce="amin")
    return torch.arange(n) != first[unique_of]


def redundancy_diagnostics(unique_of: Tensor, kept: Tensor) -> dict[str, float]:
    """``repeat_share``: the share of the kept samples whose image another kept sample already
    holds ((kept − distinct) / kept); ``distinct_unique``: the number of distinct images kept."""
    distinct = int(torch.unique(unique_of[kept]).numel())
    return {"repeat_share": (len(kept) - distinct) / len(kept) if len(kept) else 0.0, "distinct_unique": distinct}


def near_copy(image: Tensor, gen: torch.Generator) -> Tensor:
    """One fixed mild crop + brightness/contrast change of a uint8 [3, H, W] image (``NEAR_SCALE``)."""
    _, h, w = image.shape
    u = torch.rand(6, generator=gen, dtype=torch.float64).tolist()
    area = (NEAR_SCALE[0] + (NEAR_SCALE[1] - NEAR_SCALE[0]) * u[0]) * h * w
    ratio = math.exp(math.log(NEAR_RATIO[0]) + math.log(NEAR_RATIO[1] / NEAR_RATIO[0]) * u[1])
    cw = min(w, max(1, round(math.sqrt(area * ratio))))
    ch = min(h, max(1, round(math.sqrt(area / ratio))))
    top, left = int(u[2] * (h - ch + 1)), int(u[3] * (w - cw + 1))
    crop = image[None, :, top:top + ch, left:left + cw].float()
    x = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0]
    x = (x * (1 + NEAR_JITTER * (2 * u[4] - 1))).clamp_(0, 255)
    gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).mean()  # torchvision's adjust_contrast
    x = (x - gray) * (1 + NEAR_JITTER * (2 * u[5] - 1)) + gray
    return x.round_().clamp_(0, 255).to(torch.uint8)


def make_redundant(ds: ImageSource, cfg: RedundancyConfig) -> tuple[IndexedImages, IndexedImages, Tensor]:
    """(training set, its U unique images, ``unique_of``) of the redundancy probe (docs/method.md).

    The unique images are clean originals with their labels: the kNN bank. The training set holds
    them followed by the extra copies (exact, or ``near_copy`` ones); with ``cfg.dedup`` it is the U
    unique images alone, the oracle's training set, its bank the same.
    """
    held = ds.stacked()
    if held is None:
        raise ConfigError("data.redundancy needs the training images held in memory at one size "
                          "(data.in_memory=true, images no larger than data.image_size)")
    assert cfg.unique is not None  # the caller builds a redundant set only when asked
    chosen, unique_of = redundant_layout(len(ds), cfg.unique, cfg.dup_fraction, cfg.copies)
    unique = IndexedImages(held, ds.labels, ds.classes).take(chosen)
    if cfg.dedup:
        return unique, unique, torch.arange(len(unique))
    check_fits(len(unique_of), unique.images.shape[-1], "the redundant training set")
    images = unique.images[unique_of]
    if cfg.near:
        gen = torch.Generator().manual_seed(1)  # apart from the layout's: near or exact, the same set
        for i in range(len(unique), len(unique_of)):
            images[i] = near_copy(images[i], gen)
    labels = None if unique.labels is None else unique.labels[unique_of]
    return IndexedImages(images, labels, unique.classes), unique, unique_of
