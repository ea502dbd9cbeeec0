"""The decoded-image cache of image folders and archives, and what identifies their files.

A split decoded once is saved (uint8, one array or packed with its sizes) under
``~/.cache/ssl-emp/decoded`` or ``data.cache_dir``, keyed by the folder's identity (every image's
relative path, size and mtime; an archive's bytes), the split and the sizes it was stored at;
it is checked when read and rebuilt, with one line, when unusable. Apart from ``ssl_emp.data.folder``
(listing and reading the files), which calls it.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import torch
from torch import Tensor

from ssl_emp.data.decode import stored_size
from ssl_emp.errors import ConfigError, RunFailed
from ssl_emp.run.checkpoint import safe_torch_load
from ssl_emp.run.files import atomic_torch_save, atomic_write_text, sweep_temp_files
from ssl_emp.settings import DataConfig

# Part of the cache key: bump when the decoded format changes. 3: a test split's labels index the
# training split's classes (2 numbered each split's own folders, so a cache of 2 has wrong labels).
# 4: images larger than image_size keep their aspect ratio (packed, with their sizes).
CACHE_VERSION = 5
# Where archive_digest remembers an archive's sha1 (keyed by its path, size, mtime and inode).
DIGEST_DIR = Path.home() / ".cache" / "ssl-emp" / "digests"


def folder_identity(root: Path, files: list[Path] | None) -> str:
    """Changes whenever the data does: every image's path, size and mtime for a folder (a folder's
    own mtime does not change when files inside its sub-folders do); an archive's size and content."""
    if files is None:
        return f"{root.stat().st_size}|{archive_digest(root)}"
    digest = hashlib.sha1()
    for path in files:
        stat = path.stat()
        # os.fsencode: a name that is not UTF-8 (decoded with surrogate escapes) has its bytes back
        digest.update(os.fsencode(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n"))
    return digest.hexdigest()


def archive_digest(path: Path) -> str:
    """sha1 of an archive's bytes. Its mtime alone would change with every copy of the same archive
    (a download, a ``cp``), and a benchmark folder or a run made with it could no longer be continued.
    The digest is remembered under the file's size, mtime and inode in ``~/.cache/ssl-emp/digests``,
    so the archive is read once per copy, not at every start (reading it costs less than decoding it,
    which the first run does anyway)."""
    stat = path.stat()
    key = hashlib.sha1(os.fsencode(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}|{stat.st_dev}"))
    memo = DIGEST_DIR / f"{key.hexdigest()[:16]}.txt"
    try:
        known = memo.read_text().split()
        if len(known) == 2 and known[0] == key.hexdigest():
            return known[1]
    except (OSError, UnicodeDecodeError):
        pass
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    try:  # a memo that cannot be written costs a re-read next time, nothing else
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(memo, f"{key.hexdigest()} {digest.hexdigest()}\n")
    except (OSError, RunFailed):
        pass
    return digest.hexdigest()


def cache_path(cfg: DataConfig, root: Path, split: str, fingerprint: str) -> Path:
    key = f"v{CACHE_VERSION}|{root.resolve()}|{fingerprint}|{split}|{cfg.image_size}|{cfg.store_size}"
    base = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else Path.home() / ".cache" / "ssl-emp" / "decoded"
    return base / f"{hashlib.sha1(os.fsencode(key)).hexdigest()[:16]}.pt"


def _cache_problem(blob: object, size: int, store_size: int | None, n: int | None, expected: list[str] | None) -> str | None:
    """Why a loaded cache file cannot be what was written for this split (None: it can);
    ``expected``: the training split's classes, which another split's labels must index."""
    if not isinstance(blob, dict) or not isinstance(blob.get("images"), Tensor):
        return "no image tensor"
    images, labels, classes, sizes = blob["images"], blob.get("labels"), blob.get("classes"), blob.get("sizes")
    if sizes is not None:
        if not isinstance(sizes, Tensor) or sizes.dtype != torch.long or sizes.ndim != 2 or sizes.shape[1] != 2:
            return "its image sizes are not [N, 2] integers"
        if images.dtype != torch.uint8 or images.ndim != 1 or images.numel() != int(3 * sizes.prod(1).sum()):
            return f"{images.numel()} packed bytes do not match the image sizes"
    elif images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        return f"images are {images.dtype} {tuple(images.shape)}, expected uint8 [N, 3, H, W]"
    shapes = sizes.tolist() if sizes is not None else [tuple(images.shape[2:])] if len(images) else []
    if any(stored_size(h, w, size, store_size) != (h, w) for h, w in {tuple(hw) for hw in shapes}):
        return f"images of sizes other than data.image_size={size} and data.store_size={store_size} store"
    count = len(images) if sizes is None else len(sizes)
    if n is not None and count != n:
        return f"{count} images where the folder has {n}"
    notes = blob.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(note, str) for note in notes):
        return "its notes are not lines of text"
    if labels is None:
        return None if classes is None else "classes without labels"
    if not isinstance(labels, Tensor) or labels.dtype != torch.long or tuple(labels.shape) != (count,):
        return "labels do not match the images"
    if not isinstance(classes, list) or (len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes)):
        return "labels do not match the classes"
    if expected is not None and classes != expected:
        return "its labels number other classes than the training split's"
    return None


def read_cache(path: Path, size: int, store_size: int | None, n: int | None, expected: list[str] | None) -> dict | None:
    """The cached decoded split (images, labels, classes, notes), or None (absent; corrupt or
    invalid: said in one line, rebuilt)."""
    if not path.is_file():
        return None
    try:
        blob = safe_torch_load(path, "decoded-image cache", mmap=True)  # photographs: paged in as read
        problem = _cache_problem(blob, size, store_size, n, expected)
    except ConfigError as exc:
        problem = str(exc)
    if problem is None:
        return blob
    print(f"ssl-emp: decoded-image cache {path} is unusable ({problem}); decoding the images again", file=sys.stderr)
    return None


def write_cache(path: Path, images: Tensor, sizes: Tensor | None, labels: Tensor | None, classes: list[str] | None,
                 notes: list[str]) -> None:
    """Best effort: a cache that cannot be written (full disk, read-only) costs time, not the run.
    The notes go with it: a cached archive is not read again, yet its strays are still said."""
    sweep_temp_files(path.parent, only_dead=True)  # other runs may be writing here: only dead writers' files
    try:
        atomic_torch_save({"images": images, "sizes": sizes, "labels": labels, "classes": classes, "notes": notes}, path)
    except RunFailed as exc:
        print(f"ssl-emp: not caching the decoded images: {exc}", file=sys.stderr)
