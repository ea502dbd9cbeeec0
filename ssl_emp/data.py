"""Indexed image data sets: every training sample is ``(index, uint8 image [3, H, W])``.

The index is what the pruner keys its per-sample table on. Images stay uint8 until the
augmentation stage (on the training device), so small-image sets are held decoded in memory and
epochs never re-decode. Named sets: ``digits`` (embedded default, scikit-learn), ``cifar10``,
``cifar100``, ``stl10`` (torchvision files) and ``imagefolder`` (a class-folder tree, or a
.tar/.tar.gz archive of one).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import re
import sys
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ssl_emp.checkpoint import safe_torch_load
from ssl_emp.config import DataConfig
from ssl_emp.errors import ConfigError, RunFailed
from ssl_emp.fileio import atomic_torch_save, sweep_temp_files

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
CACHE_VERSION = 2  # part of the cache key: bump when the decoded format changes
# Decode into RAM only while the decoded split takes at most this share of the available memory;
# the rest is for the model, the other split and the data loader.
MEMORY_SHARE = 0.5


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
    except Image.UnidentifiedImageError as exc:
        raise ConfigError(f"cannot decode image {name}: not an image in a known format") from exc
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        # Pillow names its in-memory buffer ("<_io.BytesIO object at 0x...>"): say nothing of it.
        reason = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc)).strip() or type(exc).__name__
        raise ConfigError(f"cannot decode image {name}: {reason}") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _resize(images: Tensor, size: int) -> Tensor:
    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def _subset(ds: IndexedImages | IndexedImageFiles, n: int | None) -> IndexedImages | IndexedImageFiles:
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


# ----------------------------------------------------------------------------- image folders

# (name inside the split, name for messages, file path or the image's bytes)
Entry = tuple[str, str, "bytes | str"]


def available_memory() -> int | None:
    """Bytes available for new allocations without swapping (``MemAvailable``); None if unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _fits(needed: int) -> tuple[bool, str]:
    """Whether ``needed`` bytes fit in the memory share for decoded images; the numbers as text."""
    available = available_memory()
    text = f"{needed / 2**30:.2f} GiB, {'unknown' if available is None else f'{available / 2**30:.2f} GiB'} available"
    return available is None or needed <= MEMORY_SHARE * available, text


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _read_archive(root: Path) -> list[tuple[str, bytes]]:
    """``[(member name, bytes)]`` of every image inside a .tar/.tar.gz, sorted by name."""
    try:
        if not tarfile.is_tarfile(root):
            raise ConfigError(f"data dir {root} is a file but not a .tar/.tar.gz archive of an image folder")
        entries = []
        with tarfile.open(root) as tar:
            for member in tar:
                if member.isfile() and Path(member.name).suffix.lower() in IMAGE_SUFFIXES:
                    entries.append((member.name, tar.extractfile(member).read()))
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"archive {root} is truncated or corrupt: {reason}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read archive {root}: {exc.strerror or exc}") from exc
    entries.sort(key=lambda e: e[0])
    return entries


def _split_tree(entries: list[tuple[str, bytes | str]]) -> dict[str, list[Entry]]:
    """Group by ``train/`` and ``test/`` (at any depth of a single top folder); else all is train."""
    parts = [name.split("/") for name, _ in entries]
    # An archive usually wraps the tree in one top folder (cifar10-jpeg/train/...): strip it.
    while parts and all(len(p) > 1 for p in parts) and len({p[0] for p in parts}) == 1 and parts[0][0] not in ("train", "test"):
        parts = [p[1:] for p in parts]
    tops = {p[0] for p in parts if len(p) > 1}
    if "train" in tops:
        splits: dict[str, list[Entry]] = {}
        for p, (full, payload) in zip(parts, entries, strict=True):
            if len(p) > 1 and p[0] in ("train", "val", "test"):
                splits.setdefault(p[0], []).append(("/".join(p[1:]), full, payload))
        if "test" not in splits and "val" in splits:
            splits["test"] = splits.pop("val")
        return splits
    return {"train": [("/".join(p), full, payload) for p, (full, payload) in zip(parts, entries, strict=True)]}


def _labels_of(names: list[str]) -> tuple[Tensor | None, list[str] | None]:
    """Class = first folder (ImageFolder convention, sorted); images at the top level: no labels."""
    if any("/" not in n for n in names):
        return None, None
    classes = sorted({n.split("/")[0] for n in names})
    lookup = {c: i for i, c in enumerate(classes)}
    return torch.tensor([lookup[n.split("/")[0]] for n in names], dtype=torch.long), classes


def _fingerprint(root: Path, files: list[Path] | None) -> str:
    """Changes whenever the data does: every image's path, size and mtime for a folder (a folder's
    own mtime does not change when files inside its sub-folders do); an archive's size and mtime."""
    if files is None:
        stat = root.stat()
        return f"{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha1()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _cache_path(cfg: DataConfig, root: Path, split: str, fingerprint: str) -> Path:
    key = f"v{CACHE_VERSION}|{root.resolve()}|{fingerprint}|{split}|{cfg.image_size}"
    base = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else Path.home() / ".cache" / "ssl-emp" / "decoded"
    return base / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"


def _cache_problem(blob: object, size: int, n: int | None) -> str | None:
    """Why a loaded cache file cannot be what was written for this split (None: it can)."""
    if not isinstance(blob, dict) or not isinstance(blob.get("images"), Tensor):
        return "no image tensor"
    images, labels, classes = blob["images"], blob.get("labels"), blob.get("classes")
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
        return f"images are {images.dtype} {tuple(images.shape)}, expected uint8 [N, 3, {size}, {size}]"
    if n is not None and images.shape[0] != n:
        return f"{images.shape[0]} images where the folder has {n}"
    if labels is None:
        return None if classes is None else "classes without labels"
    if not isinstance(labels, Tensor) or labels.dtype != torch.long or tuple(labels.shape) != (images.shape[0],):
        return "labels do not match the images"
    if not isinstance(classes, list) or (len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes)):
        return "labels do not match the classes"
    return None


def _read_cache(path: Path, size: int, n: int | None) -> IndexedImages | None:
    """The cached decoded split, or None (absent; corrupt or invalid: said in one line, rebuilt)."""
    if not path.is_file():
        return None
    try:
        blob = safe_torch_load(path, "decoded-image cache")
        problem = _cache_problem(blob, size, n)
    except ConfigError as exc:
        problem = str(exc)
    if problem is None:
        return IndexedImages(blob["images"], blob.get("labels"), blob.get("classes"))
    print(f"ssl-emp: decoded-image cache {path} is unusable ({problem}); decoding the images again", file=sys.stderr)
    return None


def _write_cache(path: Path, images: Tensor, labels: Tensor | None, classes: list[str] | None) -> None:
    """Best effort: a cache that cannot be written (full disk, read-only) costs time, not the run."""
    sweep_temp_files(path.parent, only_dead=True)  # other runs may be writing here: only dead writers' files
    try:
        atomic_torch_save({"images": images, "labels": labels, "classes": classes}, path)
    except RunFailed as exc:
        print(f"ssl-emp: not caching the decoded images: {exc}", file=sys.stderr)


def _decode_all(entries: list[Entry], source: Path, archive: bool, size: int) -> Tensor:
    images = torch.empty((len(entries), 3, size, size), dtype=torch.uint8)
    for i, (_, full, payload) in enumerate(entries):
        data = Path(payload).read_bytes() if isinstance(payload, str) else payload
        name = f"{source}:{full}" if archive else str(source / full)
        images[i] = _resize(_decode(data, name)[None], size)[0]
    return images


def _imagefolder(cfg: DataConfig, split: str) -> IndexedImages | IndexedImageFiles | None:
    if cfg.data_dir is None:
        raise ConfigError("dataset 'imagefolder' needs --data-dir (a class-folder tree or a .tar/.tar.gz of one)")
    root = Path(cfg.data_dir).expanduser()
    if not root.exists():
        raise ConfigError(f"data dir not found: {root}")
    archive = not root.is_dir()
    files = None if archive else _image_files(root)
    if archive and not cfg.in_memory:
        raise ConfigError(f"data.in_memory=false needs an unpacked folder, not an archive ({root}): unpack it first")
    entries = None if archive else _split_tree([(p.relative_to(root).as_posix(), str(p)) for p in files]).get(split, [])
    cache = _cache_path(cfg, root, split, _fingerprint(root, files))
    if cfg.in_memory:
        cached = _read_cache(cache, cfg.image_size, None if entries is None else len(entries))
        if cached is not None:
            return cached
    if archive:
        fits, text = _fits(root.stat().st_size)
        if not fits:
            raise ConfigError(f"archive {root} ({text}) does not fit in memory: unpack it and pass the folder "
                              "with --set data.in_memory=false to read the images from disk")
        entries = _split_tree(_read_archive(root)).get(split, [])
    if not entries:
        if split == "train":
            raise ConfigError(f"no images found in {root}")
        return None
    labels, classes = _labels_of([name for name, _, _ in entries])
    in_memory = cfg.in_memory
    if in_memory:
        raw = sum(len(p) for _, _, p in entries) if archive else 0  # archive bytes stay in RAM while decoding
        in_memory, text = _fits(len(entries) * 3 * cfg.image_size**2 + raw)
        if not in_memory and archive:
            raise ConfigError(f"the {split} split of {root} ({len(entries)} images decoded: {text}) does not fit in "
                              "memory: unpack it and pass the folder with --set data.in_memory=false")
        if not in_memory:
            print(f"ssl-emp: the {split} split of {root} ({len(entries)} images decoded: {text}) does not fit in "
                  "memory; reading it from disk instead (data.in_memory=false"
                  + ("; set data.num_workers to decode in parallel)" if cfg.num_workers == 0 else ")"), file=sys.stderr)
    if not in_memory:
        return IndexedImageFiles([payload for _, _, payload in entries], labels, classes, cfg.image_size)
    images = _decode_all(entries, root, archive, cfg.image_size)
    _write_cache(cache, images, labels, classes)
    return IndexedImages(images, labels, classes)


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
    if ds is not None:
        ds = _subset(ds, cfg.train_subset if split.startswith("train") else cfg.test_subset)
    return ds


def _hold_out(ds: IndexedImages | IndexedImageFiles, fraction: float) -> tuple[IndexedImages | IndexedImageFiles, ...]:
    """A fixed (seed 0) stratified split of a labelled set: (rest, held out)."""
    from sklearn.model_selection import train_test_split

    if ds.labels is None:
        raise ConfigError("data.val_fraction needs a labelled training set (class folders)")
    rest, held = train_test_split(np.arange(len(ds)), test_size=fraction, stratify=ds.labels.numpy(), random_state=0)
    return _take(ds, torch.from_numpy(np.sort(rest))), _take(ds, torch.from_numpy(np.sort(held)))


def _take(ds: IndexedImages | IndexedImageFiles, keep: Tensor) -> IndexedImages | IndexedImageFiles:
    labels = None if ds.labels is None else ds.labels[keep]
    if isinstance(ds, IndexedImageFiles):
        return IndexedImageFiles([ds.files[i] for i in keep.tolist()], labels, ds.classes, ds.image_size)
    return IndexedImages(ds.images[keep], labels, ds.classes)


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
