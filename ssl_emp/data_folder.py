"""Image folders and archives of them: listing, decoding, the decoded-image cache.

Kept apart from ``ssl_emp.data`` because this is the one data source with machinery of its own (a
.tar/.tar.gz reader, a guess of the train/test layout, a memory check that chooses between decoding
into RAM and decoding on access, an on-disk cache of decoded splits) that the named sets never use.
It returns plain tensors and file lists, and ``ssl_emp.data`` wraps them as indexed data sets, so
the imports run one way (data -> data_folder); the decoder and the square resize live here for the
same reason, although ``ssl_emp.data`` uses them too.
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
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_emp.checkpoint import safe_torch_load
from ssl_emp.config import DataConfig
from ssl_emp.errors import ConfigError, RunFailed
from ssl_emp.fileio import atomic_torch_save, sweep_temp_files

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
CACHE_VERSION = 2  # part of the cache key: bump when the decoded format changes
# Decode into RAM only while the decoded split takes at most this share of the available memory;
# the rest is for the model, the other split and the data loader.
MEMORY_SHARE = 0.5

# (name inside the split, name for messages, file path or the image's bytes)
Entry = tuple[str, str, "bytes | str"]
# One split as read: decoded uint8 images [N, 3, S, S] (held in RAM) or the image files (decoded
# on access), then labels and class names (None for images at the top level).
FolderSplit = tuple["Tensor | list[str]", "Tensor | None", "list[str] | None"]


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


def _read_cache(path: Path, size: int, n: int | None) -> FolderSplit | None:
    """The cached decoded split, or None (absent; corrupt or invalid: said in one line, rebuilt)."""
    if not path.is_file():
        return None
    try:
        blob = safe_torch_load(path, "decoded-image cache")
        problem = _cache_problem(blob, size, n)
    except ConfigError as exc:
        problem = str(exc)
    if problem is None:
        return blob["images"], blob.get("labels"), blob.get("classes")
    print(f"ssl-emp: decoded-image cache {path} is unusable ({problem}); decoding the images again", file=sys.stderr)
    return None


def _write_cache(path: Path, images: Tensor, labels: Tensor | None, classes: list[str] | None) -> None:
    """Best effort: a cache that cannot be written (full disk, read-only) costs time, not the run."""
    sweep_temp_files(path.parent, only_dead=True)  # other runs may be writing here: only dead writers' files
    try:
        atomic_torch_save({"images": images, "labels": labels, "classes": classes}, path)
    except RunFailed as exc:
        print(f"ssl-emp: not caching the decoded images: {exc}", file=sys.stderr)


def decode_image(data: bytes, name: str) -> Tensor:
    """An encoded image's bytes as uint8 RGB [3, H, W]; ConfigError naming ``name`` if unreadable."""
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


def resize_square(images: Tensor, size: int) -> Tensor:
    """uint8 images [N, 3, H, W] resized (bilinear, antialiased) to [N, 3, size, size]; as is if already."""
    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def _decode_all(entries: list[Entry], source: Path, archive: bool, size: int) -> Tensor:
    images = torch.empty((len(entries), 3, size, size), dtype=torch.uint8)
    for i, (_, full, payload) in enumerate(entries):
        data = Path(payload).read_bytes() if isinstance(payload, str) else payload
        name = f"{source}:{full}" if archive else str(source / full)
        images[i] = resize_square(decode_image(data, name)[None], size)[0]
    return images


def load_imagefolder_split(cfg: DataConfig, split: str) -> FolderSplit | None:
    """One split of the folder or archive at ``data_dir``; None when it has no images for a split
    other than train (an empty train split is an error)."""
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
        return [payload for _, _, payload in entries], labels, classes
    images = _decode_all(entries, root, archive, cfg.image_size)
    _write_cache(cache, images, labels, classes)
    return images, labels, classes
