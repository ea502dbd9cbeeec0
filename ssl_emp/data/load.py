"""Loading the configured data: every training sample is ``(index, uint8 image [3, H, W])``.

The index is what the pruner keys its per-sample table on. Images stay uint8 until the
augmentation stage (on the training device), so small-image sets are held decoded in memory and
epochs never re-decode. The data sets by name are ``ssl_emp.data.registry``'s; here: the fixed
subsets, the held-out validation split, the junk and redundancy probes, a curated kept file, and
the check of a checkpoint's classes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_emp.data.datasets import DataSplits
from ssl_emp.data.junk import inject_junk
from ssl_emp.data.keep import keep_subset
from ssl_emp.data.redundancy import make_redundant
from ssl_emp.data.registry import dataset_spec
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
