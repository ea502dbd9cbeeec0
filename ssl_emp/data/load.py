"""Indexed image data sets: every training sample is ``(index, uint8 image [3, H, W])``.

The index is what the pruner keys its per-sample table on. Images stay uint8 until the
augmentation stage (on the training device), so small-image sets are held decoded in memory and
epochs never re-decode. Named sets: ``digits`` (embedded default, scikit-learn), ``cifar10``,
``cifar100``, ``stl10`` (torchvision files) and ``imagefolder`` (a class-folder tree, or a
.tar/.tar.gz archive of one: read by ``ssl_emp.data.folder``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_emp.data.datasets import DataSplits, IndexedImageFiles, IndexedImages, PackedImages, check_fits
from ssl_emp.data.decode import resize_square, stored_size
from ssl_emp.data.folder import folder_fingerprint, load_imagefolder_split
from ssl_emp.data.hf import hf_fingerprint, load_hf_split
from ssl_emp.data.junk import inject_junk
from ssl_emp.data.keep import keep_subset
from ssl_emp.data.redundancy import make_redundant
from ssl_emp.data.source import ImageSource
from ssl_emp.errors import ConfigError
from ssl_emp.settings import DataConfig


def _subset(ds: ImageSource, n: int | None, offset: int = 0) -> ImageSource:
    """A fixed (seed 0) random subset, the same for every run so results are comparable: images
    ``offset`` to ``offset + n`` of one fixed permutation, so two offsets give disjoint subsets."""
    if n is None or (offset == 0 and n >= len(ds)):
        return ds
    if offset + n > len(ds):
        raise ConfigError(f"data.train_subset_offset + data.train_subset = {offset + n} is more than the "
                          f"{len(ds)} images of the training split")
    keep = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[offset:offset + n].sort().values
    return ds.take(keep)


def _nhwc_to_tensor(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).contiguous()


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
    check_fits(len(idx), image_size, f"the {split} split of digits")
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
    # Images larger than image_size (STL-10's 96 px for 64-px views) keep their pixels, as a folder's
    # do, so that views are cropped from them in the workers rather than from a downscaled copy.
    side = stored_size(images.shape[-2], images.shape[-1], cfg.image_size, cfg.store_size)[0]  # square in, square out
    if images.shape[-1] != side:
        check_fits(len(images), side, f"the {split} split of {name}")
    return IndexedImages(resize_square(images, side), labels, classes)


def _imagefolder_set(cfg: DataConfig, split: str, classes: list[str] | None) -> ImageSource | None:
    """An image folder's split as an indexed data set; ssl_emp.data.folder does the reading."""
    found = load_imagefolder_split(cfg, split, classes)
    if found is None:
        return None
    images, sizes, labels, classes = found
    if isinstance(images, list):
        return IndexedImageFiles(images, labels, classes, cfg.image_size, cfg.store_size)
    return IndexedImages(images, labels, classes) if sizes is None else PackedImages(images, sizes, labels, classes)


def _folder_identity(cfg: DataConfig) -> list[str]:
    """An image folder *is* its data set: its files' names, sizes and mtimes, or an archive's bytes
    (``folder_fingerprint``), wherever it lies."""
    if cfg.data_dir is None:
        return []
    root = Path(cfg.data_dir).expanduser()
    if not root.exists():
        raise ConfigError(f"data dir not found: {root}")
    try:
        return [folder_fingerprint(root)]
    except OSError as exc:
        raise ConfigError(f"cannot read data dir {root}: {exc.strerror or exc}") from exc


def _hf_identity(cfg: DataConfig) -> list[str]:
    return [hf_fingerprint(cfg), cfg.hf_train_split, cfg.hf_test_split, cfg.hf_image_column]


SplitLoader = Callable[[DataConfig, str, list[str] | None], ImageSource | None]


@dataclass(frozen=True)
class DatasetSpec:
    """A named data set: how to load a split, what its config may say and what identifies its data."""

    load: SplitLoader  # (config, split, the training split's classes) -> the split, or None if absent
    reads_files: bool = True  # False: embedded in a package; data.data_dir must stay unset
    train_splits: tuple[str, ...] = ("train",)  # the data.train_split values it has
    # What identifies the data at data.data_dir, read without decoding it (ssl_emp.data.fingerprint);
    # None: fixed files (torchvision checks them) or embedded arrays, identified by the name alone.
    identity: Callable[[DataConfig], list[str]] | None = None


def _torchvision(name: str) -> SplitLoader:
    return lambda cfg, split, classes: _torchvision_set(name, cfg, split)


#: data.dataset -> its spec; the order is the one error messages list them in.
DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(lambda cfg, split, classes: load_digits_split(
        "train" if split.startswith("train") else "test", cfg.image_size), reads_files=False),
    "cifar10": DatasetSpec(_torchvision("cifar10")),
    "cifar100": DatasetSpec(_torchvision("cifar100")),
    # "train+unlabeled" trains on the 100,000 unlabelled images too (the kNN bank stays "train").
    "stl10": DatasetSpec(_torchvision("stl10"), train_splits=("train", "train+unlabeled")),
    "imagefolder": DatasetSpec(lambda cfg, split, classes: _imagefolder_set(cfg, split, classes),
                               identity=_folder_identity),
    "hf": DatasetSpec(load_hf_split, identity=_hf_identity),  # Hugging Face datasets (ssl_emp.data.hf)
}


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of data set ``name``, or a ConfigError listing the known ones."""
    spec = DATASETS.get(name)
    if spec is None:
        raise ConfigError(f"unknown dataset '{name}' (choose from {', '.join(DATASETS)})")
    return spec


def load_split(cfg: DataConfig, split: str, classes: list[str] | None = None) -> ImageSource | None:
    """One split (``train``, ``test`` or stl10's ``train+unlabeled``) of the configured data set.

    ``classes``: the training split's, which an image folder's other split is numbered by (the
    named sets have one fixed class list).
    """
    ds = dataset_spec(cfg.dataset).load(cfg, split, classes)
    if ds is not None:
        train = split.startswith("train")
        ds = _subset(ds, cfg.train_subset if train else cfg.test_subset, cfg.train_subset_offset if train else 0)
    return ds


def _hold_out(ds: ImageSource, fraction: float) -> tuple[ImageSource, ...]:
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
    return ds.take(torch.from_numpy(np.sort(rest))), ds.take(torch.from_numpy(np.sort(held)))


def _check_stratifiable(ds: ImageSource, fraction: float) -> None:
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


def load_data(cfg: DataConfig) -> DataSplits:
    """Training set, labelled kNN bank (the train split) and test set of the configured data set.

    With ``val_fraction`` > 0 the test set is never loaded: a held-out part of the training
    images takes its place, and pretraining and the bank use the rest. With ``redundancy.unique``
    set, pretraining uses a redundant set built from those (``make_redundant``; held-out images
    never enter it) and the bank its unique images. With ``inject_noise`` > 0 that fraction of the
    training images is replaced by junk (``inject_junk``); the bank stays clean. With ``keep_file``,
    pretraining uses only the images it lists (``keep_subset``).
    """
    splits = _load_splits(cfg)
    if cfg.redundancy.unique is not None:
        splits.train, unique, splits.unique_of = make_redundant(splits.train, cfg.redundancy)
        splits.bank = unique if splits.bank is not None else None
    if cfg.inject_noise > 0:
        splits.train, splits.junk = inject_junk(splits.train, cfg.inject_noise)
    if cfg.keep_file is not None:
        splits = keep_subset(splits, cfg)
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
