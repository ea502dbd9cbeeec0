"""The data sets by name (``data.dataset``): one ``DatasetSpec`` line each in ``DATASETS``, saying
how a split is loaded, what the config may say and what identifies the data at ``data.data_dir``.

The named sets: ``digits`` (embedded default, scikit-learn), ``cifar10``, ``cifar100``, ``stl10``
(torchvision files), ``imagefolder`` (a class-folder tree or a .tar/.tar.gz of one, read by
``ssl_emp.data.folder``) and ``hf`` (Hugging Face ``datasets``, ``ssl_emp.data.hf``). Apart from
``ssl_emp.data.load`` (subsets, the held-out split, the probes, kept files) so that what identifies a
data set (``ssl_emp.data.fingerprint``) can be read without the loading that depends on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_emp.data.datasets import IndexedImageFiles, IndexedImages, PackedImages, check_fits
from ssl_emp.data.decode import resize_square, stored_size
from ssl_emp.data.folder import folder_fingerprint, load_imagefolder_split
from ssl_emp.data.hf import hf_fingerprint, load_hf_split
from ssl_emp.data.source import ImageSource
from ssl_emp.errors import ConfigError
from ssl_emp.settings import DataConfig


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
