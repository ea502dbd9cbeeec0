"""What identifies a data set, wherever its files lie: compared instead of ``data.data_dir`` when a
run is resumed or a benchmark folder is continued or merged.

An image folder *is* its data set, so its fingerprint is the decoded-image cache's (every image's
relative path, size and mtime; an archive's size and bytes): a folder moved elsewhere keeps it, a
folder with other images does not. The other sets are fixed files (torchvision checks them) or
embedded arrays: their name and the subset they are cut to identify them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from ssl_emp.data.folder import folder_fingerprint
from ssl_emp.data.hf import hf_fingerprint
from ssl_emp.errors import ConfigError
from ssl_emp.settings import DataConfig

# The data set whose fingerprint depends on the files found at data.data_dir.
FOLDER_DATASET = "imagefolder"
# The other sources whose images are what lies at data.data_dir: their own fingerprint of it.
SOURCE_FINGERPRINTS: dict[str, Callable[[DataConfig], str]] = {"hf": hf_fingerprint}


def data_fingerprint(cfg: DataConfig) -> str:
    """A short hex digest that changes whenever the images the config reads do."""
    parts = [cfg.dataset, str(cfg.train_subset), str(cfg.test_subset), str(cfg.train_subset_offset)]
    if cfg.dataset == FOLDER_DATASET and cfg.data_dir is not None:
        root = Path(cfg.data_dir).expanduser()
        if not root.exists():
            raise ConfigError(f"data dir not found: {root}")
        try:
            parts.append(folder_fingerprint(root))
        except OSError as exc:
            raise ConfigError(f"cannot read data dir {root}: {exc.strerror or exc}") from exc
    elif cfg.dataset in SOURCE_FINGERPRINTS:
        parts += [SOURCE_FINGERPRINTS[cfg.dataset](cfg), cfg.hf_train_split, cfg.hf_test_split, cfg.hf_image_column]
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:16]


# The data settings that decide which image sits at which training index, beyond the source.
_INDEX_KEYS = ("train_split", "val_fraction", "inject_noise", "redundancy")


def split_fingerprint(cfg: DataConfig) -> str:
    """``data_fingerprint`` and the settings that place each image at its training index
    (``val_fraction``, the junk and redundancy probes): what a kept file of indices is valid for."""
    settings = {key: getattr(cfg, key) for key in _INDEX_KEYS}
    settings["redundancy"] = dataclasses.asdict(cfg.redundancy)
    settings["source"] = data_fingerprint(cfg)
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
