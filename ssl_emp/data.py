"""Indexed image data sets: every training sample is ``(index, uint8 image [3, H, W])``.

The index is what the pruner keys its per-sample table on. Images stay uint8 until the
augmentation stage (on the training device), so small-image sets are held decoded in memory and
epochs never re-decode. Named sets: ``digits`` (embedded default, scikit-learn), ``cifar10``,
``cifar100``, ``stl10`` (torchvision files) and ``imagefolder`` (a class-folder tree, or a
.tar/.tar.gz archive of one).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ssl_emp.checkpoint import save_atomic
from ssl_emp.config import DataConfig
from ssl_emp.errors import ConfigError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


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
        return index, _resize(_decode(Path(path).read_bytes(), path)[None], self.image_size)[0]


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


# ----------------------------------------------------------------------------- helpers


def _decode(data: bytes, name: str) -> Tensor:
    # Pillow, not torchvision.io: torchvision 0.29 deprecates its decoders.
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            array = np.asarray(img.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ConfigError(f"cannot decode image {name}: {exc}") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _resize(images: Tensor, size: int) -> Tensor:
    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def _subset(ds: IndexedImages, n: int | None) -> IndexedImages:
    """A fixed (seed 0) random subset, the same for every run so results are comparable."""
    if n is None or n >= len(ds):
        return ds
    keep = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return _take(ds, keep)


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
    images = F.interpolate(x[idx, None], size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
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
    return IndexedImages(_resize(images, cfg.image_size), labels, classes)


def _list_tree(root: str | Path) -> tuple[list[tuple[str, bytes | str]], str]:
    """``[(relative path, bytes or file path)]`` of every image under a folder or inside an archive."""
    root = Path(root).expanduser()
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        return [(p.relative_to(root).as_posix(), str(p)) for p in files], str(root)
    if root.is_file() and tarfile.is_tarfile(root):
        entries = []
        with tarfile.open(root) as tar:
            for member in tar:
                if member.isfile() and Path(member.name).suffix.lower() in IMAGE_SUFFIXES:
                    entries.append((member.name, tar.extractfile(member).read()))
        entries.sort(key=lambda e: e[0])
        return entries, str(root)
    raise ConfigError(f"data dir not found (expected an image folder or a .tar/.tar.gz of one): {root}")


def _split_tree(entries: list[tuple[str, bytes | str]]) -> dict[str, list[tuple[str, bytes | str]]]:
    """Group by ``train/`` and ``test/`` (at any depth of a single top folder); else all is train."""
    parts = [name.split("/") for name, _ in entries]
    # An archive usually wraps the tree in one top folder (cifar10-jpeg/train/...): strip it.
    while parts and all(len(p) > 1 for p in parts) and len({p[0] for p in parts}) == 1 and parts[0][0] not in ("train", "test"):
        parts = [p[1:] for p in parts]
    tops = {p[0] for p in parts if len(p) > 1}
    if "train" in tops:
        splits: dict[str, list] = {}
        for p, (_, payload) in zip(parts, entries, strict=True):
            if len(p) > 1 and p[0] in ("train", "val", "test"):
                splits.setdefault(p[0], []).append(("/".join(p[1:]), payload))
        if "test" not in splits and "val" in splits:
            splits["test"] = splits.pop("val")
        return splits
    return {"train": [("/".join(p), payload) for p, (_, payload) in zip(parts, entries, strict=True)]}


def _labels_of(names: list[str]) -> tuple[Tensor | None, list[str] | None]:
    """Class = first folder (ImageFolder convention, sorted); images at the top level: no labels."""
    if any("/" not in n for n in names):
        return None, None
    classes = sorted({n.split("/")[0] for n in names})
    lookup = {c: i for i, c in enumerate(classes)}
    return torch.tensor([lookup[n.split("/")[0]] for n in names], dtype=torch.long), classes


def _cache_path(cfg: DataConfig, source: str, split: str) -> Path:
    stat = os.stat(source)
    key = f"{os.path.abspath(source)}|{stat.st_size}|{stat.st_mtime_ns}|{split}|{cfg.image_size}"
    base = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else Path.home() / ".cache" / "ssl-emp" / "decoded"
    return base / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"


def _imagefolder(cfg: DataConfig, split: str) -> IndexedImages | IndexedImageFiles | None:
    if cfg.data_dir is None:
        raise ConfigError("dataset 'imagefolder' needs --data-dir (a class-folder tree or a .tar/.tar.gz of one)")
    source = str(Path(cfg.data_dir).expanduser())
    if not os.path.exists(source):
        raise ConfigError(f"data dir not found: {source}")
    cache = _cache_path(cfg, source, split) if cfg.in_memory else None
    if cache is not None and cache.is_file():
        blob = torch.load(cache, weights_only=True)
        return IndexedImages(blob["images"], blob.get("labels"), blob.get("classes"))
    entries = _split_tree(_list_tree(source)[0]).get(split)
    if not entries:
        if split == "train":
            raise ConfigError(f"no images found in {source}")
        return None
    labels, classes = _labels_of([name for name, _ in entries])
    if not cfg.in_memory:
        if not all(isinstance(p, str) for _, p in entries):
            raise ConfigError("data.in_memory=false needs an unpacked folder, not an archive")
        return IndexedImageFiles([p for _, p in entries], labels, classes, cfg.image_size)
    images = torch.empty((len(entries), 3, cfg.image_size, cfg.image_size), dtype=torch.uint8)
    for i, (name, payload) in enumerate(entries):
        data = Path(payload).read_bytes() if isinstance(payload, str) else payload
        images[i] = _resize(_decode(data, f"{source}:{name}")[None], cfg.image_size)[0]
    ds = IndexedImages(images, labels, classes)
    save_atomic({"images": images, "labels": labels, "classes": classes}, cache)
    return ds


def load_split(cfg: DataConfig, split: str) -> IndexedImages | IndexedImageFiles | None:
    """One split (``train``, ``test`` or stl10's ``train+unlabeled``) of the configured data set."""
    name = cfg.dataset
    if name == "digits":
        ds = load_digits_split("train" if split.startswith("train") else "test", cfg.image_size)
    elif name in ("cifar10", "cifar100", "stl10"):
        ds = _torchvision_set(name, cfg, split)
    elif name == "imagefolder":
        ds = _imagefolder(cfg, split)
    else:
        raise ConfigError(f"unknown dataset '{name}'")
    if isinstance(ds, IndexedImages):
        ds = _subset(ds, cfg.train_subset if split.startswith("train") else cfg.test_subset)
    return ds


def _hold_out(ds: IndexedImages, fraction: float) -> tuple[IndexedImages, IndexedImages]:
    """A fixed (seed 0) stratified split of a labelled in-memory set: (rest, held out)."""
    from sklearn.model_selection import train_test_split

    if not isinstance(ds, IndexedImages) or ds.labels is None:
        raise ConfigError("data.val_fraction needs a labelled training set held in memory (data.in_memory=true)")
    rest, held = train_test_split(np.arange(len(ds)), test_size=fraction, stratify=ds.labels.numpy(), random_state=0)
    return _take(ds, torch.from_numpy(np.sort(rest))), _take(ds, torch.from_numpy(np.sort(held)))


def _take(ds: IndexedImages, keep: Tensor) -> IndexedImages:
    return IndexedImages(ds.images[keep], None if ds.labels is None else ds.labels[keep], ds.classes)


def inject_junk(ds: IndexedImages, fraction: float) -> tuple[IndexedImages, Tensor]:
    """Replace a fixed (seed 0) ``fraction`` of the images by pixel-shuffled copies of themselves.

    A junk probe for selection scores: each junk image keeps its original's colour histogram (so
    no brightness shortcut gives it away) but none of its structure. Returns the new set and the
    boolean junk mask; labels stay as they were (the kNN bank uses the clean set).
    """
    if not isinstance(ds, IndexedImages):
        raise ConfigError("data.inject_noise needs the training images held in memory (data.in_memory=true)")
    n = len(ds)
    gen = torch.Generator().manual_seed(0)
    junk_idx = torch.randperm(n, generator=gen)[: round(fraction * n)].sort().values
    images = ds.images.clone()
    flat = images[junk_idx].flatten(2)  # [k, 3, H*W]
    # One pixel permutation per image, shared by its three channels (pixels move, colours stay).
    perm = torch.rand(flat.shape[0], flat.shape[2], generator=gen).argsort(dim=1)
    images[junk_idx] = flat.gather(2, perm[:, None, :].expand(-1, 3, -1)).view(-1, *images.shape[1:])
    mask = torch.zeros(n, dtype=torch.bool)
    mask[junk_idx] = True
    return IndexedImages(images, ds.labels, ds.classes), mask


def load_data(cfg: DataConfig) -> DataSplits:
    """Training set, labelled kNN bank (the train split) and test set of the configured data set.

    With ``val_fraction`` > 0 the test set is never loaded: a held-out part of the training
    images takes its place, and pretraining and the bank use the rest. With ``inject_noise`` > 0
    that fraction of the training images is replaced by junk (``inject_junk``); the bank stays clean.
    """
    splits = _load_splits(cfg)
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
    test = load_split(cfg, "test")
    if bank is not None and bank.labels is None:
        bank = None
    if test is not None and test.labels is None:
        test = None
    return DataSplits(train=train, bank=bank, test=test)
