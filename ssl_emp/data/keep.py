"""Training on a chosen subset: ``data.keep_file``, a kept.txt that ``ssl-emp curate`` writes, and
the data fingerprint that ties such a file to the data it was made from.

The file's indices are positions in the training split as ``load_data`` builds it (after
``train_subset``, ``val_fraction``, the redundancy and junk probes), so the fingerprint covers the
source and the settings that decide which image sits at which index
(``ssl_emp.data.fingerprint.split_fingerprint``).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from ssl_emp.data.datasets import DataSplits
from ssl_emp.data.fingerprint import keep_file_bytes, split_fingerprint
from ssl_emp.errors import ConfigError
from ssl_emp.run.files import atomic_write_text
from ssl_emp.settings import DataConfig

_HEADER = "# ssl-emp kept training indices ({kept} of {n}); data fingerprint {fingerprint}"
_HEADER_RE = re.compile(r"^# ssl-emp kept training indices .*data fingerprint ([0-9a-f]+)\s*$")


def write_keep_file(path: str | Path, kept: list[int], n: int, fingerprint: str) -> None:
    """``kept`` (ascending training indices of ``n``) one a line under a header naming the fingerprint."""
    lines = [_HEADER.format(kept=len(kept), n=n, fingerprint=fingerprint), *map(str, kept)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_keep_file(path: str | Path, n: int, fingerprint: str) -> Tensor:
    """The ascending indices of a kept file made from this data (``fingerprint``, ``n`` images); a
    file of other data, or with an index that is not one of the ``n`` or that repeats, is refused."""
    path = Path(path).expanduser()
    try:
        lines = keep_file_bytes(path).decode().splitlines()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read data.keep_file {path}: {exc}") from None
    found = _HEADER_RE.match(lines[0]) if lines else None
    if found is None:
        raise ConfigError(f"data.keep_file {path} has no '# ssl-emp kept training indices' header naming its data "
                          "(write it with ssl-emp curate)")
    if found.group(1) != fingerprint:
        raise ConfigError(f"data.keep_file {path} was made from other data (fingerprint {found.group(1)}, this data "
                          f"{fingerprint}); run ssl-emp curate on this data")
    indices, seen = [], set()
    for number, line in enumerate(lines[1:], start=2):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if not re.fullmatch(r"[0-9]+", text) or int(text) >= n:
            raise ConfigError(f"data.keep_file {path} line {number}: '{text}' is not a training index in [0, {n})")
        if int(text) in seen:
            raise ConfigError(f"data.keep_file {path} line {number}: index {text} appears twice")
        seen.add(int(text))
        indices.append(int(text))
    if not indices:
        raise ConfigError(f"data.keep_file {path} keeps no image")
    return torch.tensor(sorted(indices), dtype=torch.long)


def keep_subset(splits: DataSplits, cfg: DataConfig) -> DataSplits:
    """``splits`` with the training set cut to ``cfg.keep_file``'s images (and the probes' masks with
    it). The kNN bank stays the whole labelled split, so curated and uncurated runs score alike."""
    keep = read_keep_file(cfg.keep_file, len(splits.train), split_fingerprint(cfg))
    splits.train = splits.train.take(keep)
    if splits.junk is not None:
        splits.junk = splits.junk[keep]
    if splits.unique_of is not None:
        splits.unique_of = splits.unique_of[keep]
    return splits
