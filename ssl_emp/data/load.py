"""Indexed image data sets: every training sample is ``(index, uint8 image [3, H, W])``.

The index is what the pruner keys its per-sample table on. Images stay uint8 until the
augmentation stage (on the training device), so small-image sets are held decoded in memory and
epochs never re-decode. Named sets: ``digits`` (embedded default, scikit-learn), ``cifar10``,
``cifar100``, ``stl10`` (torchvision files) and ``imagefolder`` (a class-folder tree, or a
.tar/.tar.gz archive of one: read by ``ssl_emp.data_folder``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ssl_emp.config import DataConfig, RedundancyConfig, duplicated_count
from ssl_emp.data_folder import decode_image, fits_in_memory, load_imagefolder_split, resize_square
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
        path = self.files[index]
        return index, resize_square(decode_image(Path(path).read_bytes(), path)[None], self.image_size)[0]


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


def _subset(ds: IndexedImages | IndexedImageFiles, n: int | None) -> IndexedImages | IndexedImageFiles:
    """A fixed (seed 0) random subset, the same for every run so results are comparable."""
    if n is None or n >= len(ds):
        return ds
    keep = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return _take(ds, keep)


def _nhwc_to_tensor(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).contiguous()


def _check_fits(n: int, size: int, what: str) -> None:
    """Refuse a held-in-memory split whose decoded uint8 images would not fit, before allocating them."""
    fits, text = fits_in_memory(n * 3 * size * size)
    if not fits:
        raise ConfigError(f"{what} at data.image_size={size} ({n} images decoded: {text}) does not fit in memory: "
                          "choose a smaller data.image_size")


# ----------------------------------------------------------------------------- named sets


def load_digits_split(split: str, image_size: int) -> IndexedImages:
    """scikit-learn's 8×8 digits, fixed stratified 80/20 split, upsampled to RGB ``image_size``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images).float() * (255.0 / 16.0)  # pixel values are 0..16
    y = torch.from_numpy(digits.target).long()
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y.numpy(), random_state=0)
    idx = torch.from_numpy(train_idx if split == "train" else test_idx)
    _check_fits(len(idx), image_size, f"the {split} split of digits")
    images = torch.empty((len(idx), 3, image_size, image_size), dtype=torch.uint8)
    step = max(1, 2**24 // image_size**2)  # upsampled in chunks: the floats of all at once can be 4x the result
    for start in range(0, len(idx), step):
        part = F.interpolate(x[idx[start:start + step], None], size=(image_size, image_size), mode="bilinear",
                             align_corners=False)
        images[start:start + step] = part.round_().clamp_(0, 255)  # one gray channel into all three
    return IndexedImages(images, y[idx], [str(c) for c in range(10)])


def _torchvision_set(name: str, cfg: DataConfig, split: str) -> IndexedImages:
    from torchvision import datasets

    if cfg.data_dir is None:
        raise ConfigError(f"dataset '{name}' needs --data-dir (a folder with the torchvision files)")
    root = Path(cfg.data_dir).expanduser()
    if not cfg.download and not root.is_dir():
        raise ConfigError(f"data dir not found: {root} (pass --set data.download=true to download {name})")
    try:
        if name == "stl10":
            ds = datasets.STL10(str(root), split=split, download=cfg.download)
            images, labels = torch.from_numpy(ds.data), torch.from_numpy(ds.labels).long()
            classes = list(ds.classes)
        else:
            cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
            ds = cls(str(root), train=split == "train", download=cfg.download)
            images, labels = _nhwc_to_tensor(ds.data), torch.tensor(ds.targets).long()
            classes = list(ds.classes)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted ..."
        raise ConfigError(f"{name} files not found in {root}: {str(exc).splitlines()[0]}") from exc
    except OSError as exc:  # download without network
        raise ConfigError(f"could not download {name} into {root}: {exc}") from exc
    labels = None if (labels < 0).all() else labels  # STL10 "unlabeled" split has label -1
    if images.shape[-2:] != (cfg.image_size, cfg.image_size):
        _check_fits(len(images), cfg.image_size, f"the {split} split of {name}")
    return IndexedImages(resize_square(images, cfg.image_size), labels, classes)


def _imagefolder_set(cfg: DataConfig, split: str, classes: list[str] | None) -> IndexedImages | IndexedImageFiles | None:
    """An image folder's split as an indexed data set; ssl_emp.data_folder does the reading."""
    found = load_imagefolder_split(cfg, split, classes)
    if found is None:
        return None
    images, labels, classes = found
    if isinstance(images, Tensor):
        return IndexedImages(images, labels, classes)
    return IndexedImageFiles(images, labels, classes, cfg.image_size)


def load_split(cfg: DataConfig, split: str, classes: list[str] | None = None) -> IndexedImages | IndexedImageFiles | None:
    """One split (``train``, ``test`` or stl10's ``train+unlabeled``) of the configured data set.

    ``classes``: the training split's, which an image folder's other split is numbered by (the
    named sets have one fixed class list).
    """
    name = cfg.dataset
    if name == "digits":
        ds = load_digits_split("train" if split.startswith("train") else "test", cfg.image_size)
    elif name in ("cifar10", "cifar100", "stl10"):
        ds = _torchvision_set(name, cfg, split)
    elif name == "imagefolder":
        ds = _imagefolder_set(cfg, split, classes)
    else:
        raise ConfigError(f"unknown dataset '{name}'")
    if ds is not None:
        ds = _subset(ds, cfg.train_subset if split.startswith("train") else cfg.test_subset)
    return ds


def _hold_out(ds: IndexedImages | IndexedImageFiles, fraction: float) -> tuple[IndexedImages | IndexedImageFiles, ...]:
    """A fixed (seed 0) stratified split of a labelled set: (rest, held out)."""
    from sklearn.model_selection import train_test_split

    if ds.labels is None:
        raise ConfigError("data.val_fraction needs a labelled training set (class folders)")
    _check_stratifiable(ds, fraction)
    try:
        rest, held = train_test_split(np.arange(len(ds)), test_size=fraction, stratify=ds.labels.numpy(), random_state=0)
    except ValueError as exc:  # a case the checks above do not foresee: still one line
        raise ConfigError(f"data.val_fraction={fraction} cannot hold out a stratified split of {len(ds)} images: "
                          f"{str(exc).splitlines()[0]}") from exc
    return _take(ds, torch.from_numpy(np.sort(rest))), _take(ds, torch.from_numpy(np.sort(held)))


def _check_stratifiable(ds: IndexedImages | IndexedImageFiles, fraction: float) -> None:
    """Refuse in words a split that sklearn's ``train_test_split`` would refuse with a ValueError:
    each part needs an image of every class, and so every class needs two images."""
    counts = torch.bincount(ds.labels)
    present = counts.nonzero().flatten()
    n, k = len(ds), len(present)
    smallest = int(present[counts[present].argmin()]) if k else 0
    if k and counts[smallest] < 2:
        name = ds.classes[smallest] if ds.classes and smallest < len(ds.classes) else str(smallest)
        raise ConfigError(f"data.val_fraction needs at least 2 training images of every class for a stratified "
                          f"split; class '{name}' has {int(counts[smallest])}")
    held = math.ceil(fraction * n)  # sklearn's rounding of test_size
    if held < k or n - held < k:
        part, size = ("held-out part", held) if held < k else ("training part", n - held)
        low, high = math.ceil(k / n * 1e4) / 1e4, math.floor((n - k) / n * 1e4) / 1e4  # rounded inwards
        raise ConfigError(f"data.val_fraction={fraction} leaves a {part} of {size} of the {n} training images, "
                          f"fewer than the {k} classes; choose a value in [{low:g}, {high:g}]")


def _take(ds: IndexedImages | IndexedImageFiles, keep: Tensor) -> IndexedImages | IndexedImageFiles:
    labels = None if ds.labels is None else ds.labels[keep]
    if isinstance(ds, IndexedImageFiles):
        return IndexedImageFiles([ds.files[i] for i in keep.tolist()], labels, ds.classes, ds.image_size)
    return IndexedImages(ds.images[keep], labels, ds.classes)


def junk_indices(n: int, fraction: float, gen: torch.Generator | None = None) -> Tensor:
    """The sorted indices ``inject_junk`` replaces among ``n`` training images: fixed by seed 0, so
    an analysis of a finished run can tell its junk images from the clean ones."""
    gen = torch.Generator().manual_seed(0) if gen is None else gen
    return torch.randperm(n, generator=gen)[: round(fraction * n)].sort().values


def inject_junk(ds: IndexedImages, fraction: float) -> tuple[IndexedImages, Tensor]:
    """Replace a fixed (seed 0) ``fraction`` of the images by pixel-shuffled copies of themselves.

    A junk probe for selection scores: each junk image keeps its original's colour histogram (so
    no brightness shortcut gives it away) but none of its structure. Returns the new set and the
    boolean junk mask; labels stay as they were (the kNN bank uses the clean set).
    """
    if not isinstance(ds, IndexedImages):
        raise ConfigError("data.inject_noise needs the training images held in memory (data.in_memory=true)")
    gen = torch.Generator().manual_seed(0)
    junk_idx = junk_indices(len(ds), fraction, gen)
    images = ds.images.clone()
    flat = images[junk_idx].flatten(2)  # [k, 3, H*W]
    # One pixel permutation per image, shared by its three channels (pixels move, colours stay).
    perm = torch.rand(flat.shape[0], flat.shape[2], generator=gen).argsort(dim=1)
    images[junk_idx] = flat.gather(2, perm[:, None, :].expand(-1, 3, -1)).view(-1, *images.shape[1:])
    mask = torch.zeros(len(ds), dtype=torch.bool)
    mask[junk_idx] = True
    return IndexedImages(images, ds.labels, ds.classes), mask


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


def make_redundant(ds: IndexedImages | IndexedImageFiles, cfg: RedundancyConfig) -> tuple[IndexedImages, IndexedImages, Tensor]:
    """(training set, its U unique images, ``unique_of``) of the redundancy probe (docs/method.md).

    The unique images are clean originals with their labels: the kNN bank. The training set holds
    them followed by the extra copies (exact, or ``near_copy`` ones); with ``cfg.dedup`` it is the U
    unique images alone, the oracle's training set, its bank the same.
    """
    if not isinstance(ds, IndexedImages):
        raise ConfigError("data.redundancy needs the training images held in memory (data.in_memory=true)")
    assert cfg.unique is not None  # the caller builds a redundant set only when asked
    chosen, unique_of = redundant_layout(len(ds), cfg.unique, cfg.dup_fraction, cfg.copies)
    unique = _take(ds, chosen)
    assert isinstance(unique, IndexedImages)
    if cfg.dedup:
        return unique, unique, torch.arange(len(unique))
    _check_fits(len(unique_of), unique.images.shape[-1], "the redundant training set")
    images = unique.images[unique_of]
    if cfg.near:
        gen = torch.Generator().manual_seed(1)  # apart from the layout's: near or exact, the same set
        for i in range(len(unique), len(unique_of)):
            images[i] = near_copy(images[i], gen)
    labels = None if unique.labels is None else unique.labels[unique_of]
    return IndexedImages(images, labels, unique.classes), unique, unique_of


def load_data(cfg: DataConfig) -> DataSplits:
    """Training set, labelled kNN bank (the train split) and test set of the configured data set.

    With ``val_fraction`` > 0 the test set is never loaded: a held-out part of the training
    images takes its place, and pretraining and the bank use the rest. With ``redundancy.unique``
    set, pretraining uses a redundant set built from those (``make_redundant``; held-out images
    never enter it) and the bank its unique images. With ``inject_noise`` > 0 that fraction of the
    training images is replaced by junk (``inject_junk``); the bank stays clean.
    """
    splits = _load_splits(cfg)
    if cfg.redundancy.unique is not None:
        splits.train, unique, splits.unique_of = make_redundant(splits.train, cfg.redundancy)
        splits.bank = unique if splits.bank is not None else None
    if cfg.inject_noise > 0:
        splits.train, splits.junk = inject_junk(splits.train, cfg.inject_noise)
    return splits


def _load_splits(cfg: DataConfig) -> DataSplits:
    train = load_split(cfg, cfg.train_split)
    if train is None or len(train) == 0:
        raise ConfigError(f"the training split of '{cfg.dataset}' is empty")
    if cfg.val_fraction > 0:
        if cfg.train_split != "train":
            raise ConfigError("data.val_fraction needs data.train_split=train (a labelled training split)")
        rest, val = _hold_out(train, cfg.val_fraction)
        return DataSplits(train=rest, bank=rest, test=val, test_is_validation=True)
    bank = train if cfg.train_split == "train" else load_split(cfg, "train")
    test = load_split(cfg, "test", classes=(train if bank is None else bank).classes)
    if bank is not None and bank.labels is None:
        bank = None
    if test is not None and test.labels is None:
        test = None
    return DataSplits(train=train, bank=bank, test=test)


def check_classes(ckpt: Mapping[str, Any], data: DataSplits, source: str | Path, advice: str = "") -> None:
    """Refuse data whose classes are not the ones the checkpoint ``ckpt`` (read from ``source``)
    was trained on: label i would mean another class than it did in training. A checkpoint from
    before checkpoints recorded their classes (no ``classes`` entry) is not checked."""
    if "classes" not in ckpt or ckpt["classes"] == data.train.classes:
        return
    recorded, found = ckpt["classes"], data.train.classes
    if found is None:
        how = "the data has no class folders"
    elif recorded is None:
        how = f"the data has {len(found)} classes where the run had none"
    else:
        missing = [c for c in recorded if c not in found]
        extra = [c for c in found if c not in recorded]
        how = " and ".join([*([f"the data lacks {_names(missing)}"] if missing else []),
                            *([f"the data adds {_names(extra)}"] if extra else [])]) or "the data orders them differently"
    trained = "no classes" if recorded is None else f"{len(recorded)} classes"
    raise ConfigError(f"{source} was trained on {trained} and {how}: its labels would mean other classes{advice}")


def _names(classes: list[str], shown: int = 3) -> str:
    more = f", ... ({len(classes) - shown} more)" if len(classes) > shown else ""
    return ", ".join(f"'{c}'" for c in classes[:shown]) + more
