"""Hugging Face ``datasets`` as a source (``data.dataset: hf``; the optional extra ``ssl-emp[hf]``).

``data.data_dir`` is a folder written by ``save_to_disk`` (a ``DatasetDict`` of splits, or one
``Dataset``: the training split) or, where the machine is online, a hub name. Images are read by
index from the memory-mapped Arrow table and decoded by ``ssl_emp.data.decode``, so every pruning
method and ``curate`` work on it as on any other source.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ssl_emp.data.decode import decode_image, read_image, store_image
from ssl_emp.data.source import ImageSource
from ssl_emp.errors import ConfigError
from ssl_emp.settings import DataConfig


class HFImages(ImageSource):
    """One split of a Hugging Face data set: its image column decoded on access at its ``stored_size``."""

    def __init__(self, table: Any, column: str, labels: Tensor | None, classes: list[str] | None, image_size: int,
                 store_size: int | None):
        self.table, self.column = table, column  # the column cast to undecoded {"bytes", "path"}
        self.labels, self.classes = labels, classes
        self.image_size, self.store_size = image_size, store_size

    def __len__(self) -> int:
        return len(self.table)

    def read(self, index: int) -> Tensor:
        item = self.table[int(index)][self.column]
        shorter = self.store_size  # full size without one (a JPEG's DCT scale only down to it)
        if item.get("bytes") is not None:
            image = decode_image(item["bytes"], f"{self.column}[{index}]", shorter)
        else:
            image = read_image(item["path"], shorter)
        return store_image(image, self.image_size, self.store_size)


def _datasets() -> Any:
    """The ``datasets`` package, or a one-line ConfigError saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise ConfigError("data.dataset=hf needs the Hugging Face datasets package: pip install 'ssl-emp[hf]'") from None
    return datasets


def _open(cfg: DataConfig) -> Any:
    """The ``Dataset`` or ``DatasetDict`` at ``data.data_dir`` (a ``save_to_disk`` folder or a hub name)."""
    datasets = _datasets()
    if cfg.data_dir is None:
        raise ConfigError("dataset 'hf' needs --data-dir (a folder written by save_to_disk, or a hub name)")
    root = Path(cfg.data_dir).expanduser()
    try:
        if root.exists():
            return datasets.load_from_disk(str(root))
        return datasets.load_dataset(cfg.data_dir)
    except (FileNotFoundError, ValueError, OSError, ConnectionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot open Hugging Face data set {cfg.data_dir}: {first}") from exc


def _split(opened: Any, name: str, train: bool, cfg: DataConfig) -> Any | None:
    if not hasattr(opened, "keys"):  # one Dataset: the training split, no other
        return opened if train else None
    if name in opened:
        return opened[name]
    if not train:
        return None
    raise ConfigError(f"Hugging Face data set {cfg.data_dir} has no split '{name}' (it has {', '.join(opened)}): "
                      "set data.hf_train_split")


def _labels(table: Any, column: str | None, classes: list[str] | None, cfg: DataConfig) -> tuple[Tensor | None, list[str] | None]:
    """int64 labels and class names: a ClassLabel's names, else the sorted distinct values (the
    training split's ``classes`` number another split's)."""
    if column is None:
        return None, None
    if column not in table.column_names:
        raise ConfigError(f"Hugging Face data set {cfg.data_dir} has no label column '{column}' (columns: "
                          f"{', '.join(table.column_names)}): set data.hf_label_column, or null for none")
    values = table[column]
    names = getattr(table.features[column], "names", None)
    if names is not None:
        labels = torch.tensor(values, dtype=torch.long)
        if len(labels) and (labels < 0).all():  # a split without labels (all -1, e.g. imagenet-1k's test)
            return None, list(names)
        return labels, list(names)
    found = sorted({str(v) for v in values})
    classes = found if classes is None else classes
    lookup = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in found if c not in lookup]
    if unknown:
        raise ConfigError(f"the test split of {cfg.data_dir} has labels the training split lacks: {', '.join(unknown[:3])}")
    return torch.tensor([lookup[str(v)] for v in values], dtype=torch.long), list(classes)


def load_hf_split(cfg: DataConfig, split: str, classes: list[str] | None = None) -> HFImages | None:
    """The ``train`` (``data.hf_train_split``) or ``test`` (``data.hf_test_split``) split; None if absent."""
    datasets = _datasets()

    train = split.startswith("train")
    table = _split(_open(cfg), cfg.hf_train_split if train else cfg.hf_test_split, train, cfg)
    if table is None:
        return None
    column = cfg.hf_image_column
    if column not in table.column_names:
        raise ConfigError(f"Hugging Face data set {cfg.data_dir} has no image column '{column}' (columns: "
                          f"{', '.join(table.column_names)}): set data.hf_image_column")
    if not isinstance(table.features[column], datasets.Image):
        raise ConfigError(f"column '{column}' of {cfg.data_dir} holds {table.features[column]}, not images")
    labels, classes = _labels(table, cfg.hf_label_column, classes, cfg)
    table = table.cast_column(column, datasets.Image(decode=False))
    return HFImages(table, column, labels, classes, cfg.image_size, cfg.store_size)


def hf_fingerprint(cfg: DataConfig) -> str:
    """What identifies the data set at ``data.data_dir``: its splits' ``datasets`` fingerprints."""
    opened = _open(cfg)
    tables = [opened[k] for k in sorted(opened)] if hasattr(opened, "keys") else [opened]
    return hashlib.sha1("|".join(t._fingerprint for t in tables).encode()).hexdigest()
