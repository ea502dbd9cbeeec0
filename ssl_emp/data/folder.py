"""Image folders and archives of them: listing, the train/test layout, decoding a split.

Kept apart from ``ssl_emp.data.registry`` because this is the one data source with machinery of its
own (a .tar/.tar.gz reader, a guess of the train/test layout, a memory check that chooses between
decoding into RAM and decoding on access; the on-disk cache of decoded splits is
``ssl_emp.data.cache``) that the named sets never use. It returns plain tensors and file lists, which
``ssl_emp.data.datasets`` and ``ssl_emp.data.registry`` wrap as indexed data sets, so the imports run
one way (registry, datasets -> folder -> cache, decode).
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import sys
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from ssl_emp.data.cache import cache_path, folder_identity, read_cache, write_cache
from ssl_emp.data.decode import decode_image, read_image, store_image, stored_size
from ssl_emp.errors import ConfigError
from ssl_emp.progress import show_progress
from ssl_emp.settings import DataConfig

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")  # .gif: its first frame
# Decode into RAM only while the decoded split takes at most this share of the available memory;
# the rest is for the model, the other split and the data loader.
MEMORY_SHARE = 0.5

# (name inside the split, name for messages, file path or the image's bytes)
Entry = tuple[str, str, "bytes | str"]
# One split as read: decoded uint8 images held in RAM, either [N, 3, H, W] (sizes None: all of one size) or packed in one flat buffer with their sizes [N, 2]; or the image files
# (decoded on access, sizes None); then labels and class names (None for images at the top level).
FolderSplit = tuple["Tensor | list[str]", "Tensor | None", "Tensor | None", "list[str] | None"]


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


def fits_in_memory(needed: int) -> tuple[bool, str]:
    """Whether ``needed`` bytes fit in the memory share for decoded images; the numbers as text."""
    available = available_memory()
    text = f"{needed / 2**30:.2f} GiB, {'unknown' if available is None else f'{available / 2**30:.2f} GiB'} available"
    return available is None or needed <= MEMORY_SHARE * available, text


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def _is_hidden(name: str) -> bool:
    # .DS_Store, .git/...: not data anyone meant to train on, so not worth a word when skipped.
    return any(part.startswith(".") for part in name.split("/"))


def _list_files(root: Path) -> tuple[list[Path], list[str]]:
    """The image files under ``root`` (sorted) and the names of the other, non-hidden files."""
    images, others = [], []
    for path in _walk(root, root, (os.path.realpath(root),), hidden=False):
        name = path.relative_to(root).as_posix()
        if _is_image(name):
            if not os.access(path, os.R_OK):  # said now, not by a DataLoader worker hours into the run
                raise ConfigError(f"cannot read image {path}: Permission denied")
            images.append(path)
        elif not _is_hidden(name):
            others.append(name)
    return sorted(images), sorted(others)


def _walk(folder: Path, root: Path, above: tuple[str, ...], hidden: bool) -> Iterator[Path]:
    """The files under ``folder``, following links to folders (a linked train/ or class folder is
    read as if it were there); ``above``: the real paths of ``folder`` and the folders above it,
    a link back to which is a loop. A folder that cannot be listed, a loop and a broken link are
    refused in one line: a silently dropped folder would change the classes or the layout.
    Hidden entries (an editor's dangling ``.#lock`` link; all in a hidden ``folder``) are nobody's
    data: skipped silently.
    """
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda e: e.name)
    except OSError as exc:
        raise ConfigError(f"cannot read folder {folder}: {exc.strerror or type(exc).__name__}") from exc
    for entry in entries:
        path = Path(entry.path)
        skip = hidden or _is_hidden(entry.name)
        try:  # both follow links
            is_dir = entry.is_dir()
            is_file = not is_dir and entry.is_file()
        except OSError:  # a loop of links: said below, as a broken link
            is_dir = is_file = False
        if is_dir:
            real = os.path.realpath(path)
            if skip and (real in above or not os.access(path, os.R_OK | os.X_OK)):
                continue
            if real in above:
                raise ConfigError(f"link loop in {root}: {path} leads back to {real}, which holds it")
            yield from _walk(path, root, (*above, real), skip)
        elif is_file:
            yield path
        elif not skip:
            try:  # a link to nothing: its error ("No such file or directory", a loop of links) says why
                path.stat()
            except OSError as exc:
                link = f" (a link to {os.readlink(path)})" if entry.is_symlink() else ""
                raise ConfigError(f"cannot read {path}{link}: {exc.strerror or type(exc).__name__}") from exc


def _read_archive(root: Path) -> tuple[list[tuple[str, bytes]], list[str]]:
    """``[(member name, bytes)]`` of every image inside a .tar/.tar.gz, sorted by name, and the
    names of the other, non-hidden files."""
    try:
        if not tarfile.is_tarfile(root):
            raise ConfigError(f"data dir {root} is a file but not a .tar/.tar.gz archive of an image folder")
        entries, others = [], []
        with tarfile.open(root) as tar, show_progress(desc=f"reading {root}", unit="files") as bar:
            for member in tar:
                if member.isfile() and _is_image(member.name):
                    entries.append((member.name, tar.extractfile(member).read()))
                elif member.isfile() and not _is_hidden(member.name):
                    others.append(member.name)
                bar.update(1)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"archive {root} is truncated or corrupt: {reason}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read archive {root}: {exc.strerror or exc}") from exc
    entries.sort(key=lambda e: e[0])
    return entries, sorted(others)


def _split_tree(entries: list[tuple[str, bytes | str]]) -> tuple[dict[str, list[Entry]], list[str]]:
    """Group by ``train/``, ``val/`` and ``test/`` (at any depth of a single top folder); else all
    is train. Also returns the image files that lie outside that layout, which no split holds.

    Where there are folders, an image file beside them (a preview.jpg beside the top folder or
    beside train/, a cover.jpg beside the class folders) is a stray, not a reason to read the whole
    tree as unlabelled: it is left out and named. Only a level of nothing but files is unlabelled.
    """
    items = [(name.split("/"), name, payload) for name, payload in entries]
    stray: list[str] = []
    # An archive usually wraps the tree in one top folder (cifar10-jpeg/train/...): strip it.
    while len(tops := {p[0] for p, _, _ in items if len(p) > 1}) == 1 and not tops & {"train", "test"}:
        stray += [full for p, full, _ in items if len(p) == 1]
        items = [(p[1:], full, payload) for p, full, payload in items if len(p) > 1]
    groups: dict[str, list[tuple[list[str], str, bytes | str]]] = {}
    if "train" in {p[0] for p, _, _ in items if len(p) > 1}:
        for p, full, payload in items:
            if len(p) > 1 and p[0] in ("train", "val", "test"):
                groups.setdefault(p[0], []).append((p[1:], full, payload))
            else:
                stray.append(full)
        if "test" not in groups and "val" in groups:
            groups["test"] = groups.pop("val")
    elif stray and all(len(p) == 1 for p, _, _ in items):
        # No class folders below the stripped ones either: loose images throughout (a flat folder
        # and a thumbs/ beside it), one unlabelled set, nothing stray. Names without a "/": no labels.
        return {"train": [(full.rsplit("/", 1)[-1], full, payload) for full, payload in entries]}, []
    else:
        groups["train"] = items
    splits: dict[str, list[Entry]] = {}
    for split, members in groups.items():
        labelled = any(len(p) > 1 for p, _, _ in members)
        stray += [full for p, full, _ in members if labelled and len(p) == 1]
        splits[split] = [("/".join(p), full, payload) for p, full, payload in members if len(p) > 1 or not labelled]
    return splits, sorted(stray)


def _labels_of(names: list[str], classes: list[str] | None, split: str, root: Path) -> tuple[Tensor | None, list[str] | None]:
    """Class = first folder (ImageFolder convention, sorted); images at the top level: no labels.

    ``classes`` (the training split's) numbers another split's folders, so that label i means the
    same class in every split; a class that the training split lacks has no number and is refused.
    """
    if not names or "/" not in names[0]:  # _split_tree leaves a split either all labelled or all loose
        return None, None
    found = sorted({n.split("/")[0] for n in names})
    if classes is None:
        classes = found
    unknown = [c for c in found if c not in classes]
    if unknown:
        raise ConfigError(f"the {split} split of {root} has {_count(unknown, 'class folder')} that the training split "
                          f"lacks: {_some(unknown)}; a class needs training images to be scored on")
    lookup = {c: i for i, c in enumerate(classes)}
    return torch.tensor([lookup[n.split("/")[0]] for n in names], dtype=torch.long), list(classes)


def _count(items: list[str], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _some(names: list[str], shown: int = 3) -> str:
    more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _notes(stray: list[str], others: list[str]) -> list[str]:
    """What the layout detection left out, one stderr line each (without the ``ssl-emp:`` prefix)."""
    notes = []
    if stray:
        notes.append(f"skipping {_count(stray, 'image file')} outside the class folders: {_some(stray)}")
    if others:
        notes.append(f"skipping {_count(others, 'file')} without an image suffix ({' '.join(IMAGE_SUFFIXES)}): "
                     f"{_some(others)}")
    return notes


def _say(notes: list[str]) -> None:
    for note in notes:
        print(f"ssl-emp: {note}", file=sys.stderr)


def folder_fingerprint(root: Path) -> str:
    """The fingerprint the cache keys on of the folder or archive at ``root`` (what
    ``ssl_emp.data.fingerprint`` compares across runs): it ignores where ``root`` lies."""
    return folder_identity(root, _list_files(root)[0] if root.is_dir() else None)


def _decode_all(entries: list[Entry], source: Path, size: int, store_size: int | None,
                split: str = "train") -> tuple[Tensor, Tensor | None]:
    """The split's images at their ``stored_size``: [N, 3, H, W] when all share one size, else
    packed into one flat buffer, with their sizes [N, 2]."""
    images = []
    for _, full, payload in show_progress(entries, desc=f"decoding the {split} split of {source}"):
        # A JPEG is decoded at a reduced DCT scale only down to store_size: with none, at full size, so a
        # small crop is cut from the photo's own pixels (as torchvision's RandomResizedCrop cuts it).
        image = (read_image(payload, store_size) if isinstance(payload, str)
                 else decode_image(payload, f"{source}:{full}", store_size))
        images.append(store_image(image, size, store_size))
    if len({tuple(image.shape[-2:]) for image in images}) <= 1:  # one size: an array, as the named sets
        return torch.stack(images) if images else torch.empty((0, 3, size, size), dtype=torch.uint8), None
    return torch.cat([image.reshape(-1) for image in images]), torch.tensor([image.shape[-2:] for image in images])


def _stored_bytes(entries: list[Entry], size: int, store_size: int | None) -> int:
    """Bytes of the split's images at their ``stored_size``, from the image headers (no decoding)."""
    from PIL import Image

    total = 0
    for _, _, payload in entries:
        try:
            with Image.open(payload if isinstance(payload, str) else io.BytesIO(payload)) as img:
                width, height = img.size
        except (OSError, ValueError):  # undecodable: said, naming it, when it is decoded
            width = height = size
        h, w = stored_size(height, width, size, store_size)
        total += 3 * h * w
    return total


def load_imagefolder_split(cfg: DataConfig, split: str, classes: list[str] | None = None) -> FolderSplit | None:
    """One split of the folder or archive at ``data_dir``; None when it has no images for a split
    other than train (an empty train split is an error).

    ``classes``: the training split's, to number another split's class folders by (one map per data
    set; a class folder that the training split lacks is refused). What the layout detection left
    out is said on stderr when the training split is read.
    """
    if cfg.data_dir is None:
        raise ConfigError("dataset 'imagefolder' needs --data-dir (a class-folder tree or a .tar/.tar.gz of one)")
    root = Path(cfg.data_dir).expanduser()
    if not root.exists():
        raise ConfigError(f"data dir not found: {root}")
    archive = not root.is_dir()
    if archive and not cfg.in_memory:
        raise ConfigError(f"data.in_memory=false needs an unpacked folder, not an archive ({root}): unpack it first")
    files, entries, notes = None, None, []
    if not archive:
        files, others = _list_files(root)
        splits, stray = _split_tree([(p.relative_to(root).as_posix(), str(p)) for p in files])
        entries, notes = splits.get(split, []), _notes(stray, others)
    if split != "train":
        notes = []  # said once, with the training split
    cache = cache_path(cfg, root, split, folder_identity(root, files))
    if cfg.in_memory:
        cached = read_cache(cache, cfg.image_size, cfg.store_size, None if entries is None else len(entries), classes)
        if cached is not None:
            _say(notes if not archive else cached.get("notes", []))
            return cached["images"], cached.get("sizes"), cached.get("labels"), cached.get("classes")
    if archive:
        fits, text = fits_in_memory(root.stat().st_size)
        if not fits:
            raise ConfigError(f"archive {root} ({text}) does not fit in memory: unpack it and pass the folder "
                              "with --set data.in_memory=false to read the images from disk")
        members, others = _read_archive(root)
        splits, stray = _split_tree(members)
        entries = splits.get(split, [])
        notes = _notes(stray, others) if split == "train" else []
    if not entries:
        if split == "train":  # what was skipped is part of the one line: it may be why nothing is left
            raise ConfigError(f"no images found in {root}" + "".join(f"; {note}" for note in notes))
        return None
    _say(notes)
    labels, classes = _labels_of([name for name, _, _ in entries], classes, split, root)
    in_memory = cfg.in_memory
    if in_memory:
        raw = sum(len(p) for _, _, p in entries) if archive else 0  # archive bytes stay in RAM while decoding
        in_memory, text = fits_in_memory(_stored_bytes(entries, cfg.image_size, cfg.store_size) + raw)
        if not in_memory and archive:
            raise ConfigError(f"the {split} split of {root} ({len(entries)} images decoded: {text}) does not fit in "
                              "memory: unpack it and pass the folder with --set data.in_memory=false")
        if not in_memory:
            print(f"ssl-emp: the {split} split of {root} ({len(entries)} images decoded: {text}) does not fit in "
                  "memory; reading it from disk instead (data.in_memory=false"
                  + ("; set data.num_workers to decode in parallel)" if cfg.num_workers == 0 else ")"), file=sys.stderr)
    if not in_memory:
        return [payload for _, _, payload in entries], None, labels, classes
    images, sizes = _decode_all(entries, root, cfg.image_size, cfg.store_size, split)
    write_cache(cache, images, sizes, labels, classes, notes)
    return images, sizes, labels, classes
