"""What identifies a data set, wherever its files lie: compared instead of ``data.data_dir`` when a
run is resumed or a benchmark folder is continued or merged.

An image folder *is* its data set, so its fingerprint is the decoded-image cache's (every image's
relative path, size and mtime; an archive's size and bytes): a folder moved elsewhere keeps it, a
folder with other images does not; a Hugging Face folder by its tables' own fingerprints. Each data
set says which in its ``DatasetSpec.identity`` (``ssl_emp.data.registry.DATASETS``). The other sets are
fixed files (torchvision checks them) or embedded arrays: their name and the subset they are cut to
identify them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from ssl_emp.data.registry import dataset_spec
from ssl_emp.errors import ConfigError
from ssl_emp.settings import DataConfig


def source_fingerprint(cfg: DataConfig) -> str:
    """A short hex digest that changes whenever the images of the source change: the data set's
    name and subset, and what its ``DatasetSpec.identity`` says of the data at ``data.data_dir``."""
    parts = [cfg.dataset, str(cfg.train_subset), str(cfg.test_subset), str(cfg.train_subset_offset)]
    identity = dataset_spec(cfg.dataset).identity
    if identity is not None:
        parts += identity(cfg)
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:16]


def keep_file_bytes(path: str | Path) -> bytes:
    """The bytes of ``data.keep_file``, its absence or unreadability one line (read by the fingerprint
    and by ``ssl_emp.data.keep.read_keep_file``)."""
    path = Path(path).expanduser()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"data.keep_file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read data.keep_file {path}: {exc.strerror or exc}") from None


def data_fingerprint(cfg: DataConfig) -> str:
    """What a run trains on, wherever its files lie: ``source_fingerprint``, and with ``data.keep_file``
    that file's bytes, so a kept file edited between a run and its ``--resume`` is other data while a
    copy of it elsewhere is the same (the path itself, like ``data.data_dir``, is a neutral key)."""
    source = source_fingerprint(cfg)
    if cfg.keep_file is None:
        return source
    kept = hashlib.sha1(keep_file_bytes(cfg.keep_file)).hexdigest()
    return hashlib.sha1(f"{source}\0keep_file\0{kept}".encode()).hexdigest()[:16]


# The data settings that decide which image sits at which training index, beyond the source.
_INDEX_KEYS = ("train_split", "val_fraction", "inject_noise", "redundancy")


def split_fingerprint(cfg: DataConfig) -> str:
    """``source_fingerprint`` and the settings that place each image at its training index
    (``val_fraction``, the junk and redundancy probes): what a kept file of indices is valid for."""
    settings = {key: getattr(cfg, key) for key in _INDEX_KEYS}
    settings["redundancy"] = dataclasses.asdict(cfg.redundancy)
    settings["source"] = source_fingerprint(cfg)
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
