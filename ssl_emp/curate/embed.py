"""The embeddings ``curate`` works on: a checkpoint's backbone features of a split (the features the
kNN monitor scores, L2-normalised), cached in the output folder while the checkpoint and the data
are unchanged, or a user's own features (``--embeddings FILE.npy``: CLIP, DINOv2, ...)."""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ssl_emp.augment import eval_transform
from ssl_emp.config import Config
from ssl_emp.curate.clusters import normalised
from ssl_emp.data.datasets import loader_generator
from ssl_emp.data.decode import eval_view
from ssl_emp.data.source import ImageSource
from ssl_emp.errors import ConfigError
from ssl_emp.eval.features import extract_features
from ssl_emp.run.files import atomic_write_bytes, atomic_write_text


class _Images(Dataset):
    """A source's images through the evaluation view, without their indices: what ``extract_features`` embeds."""

    def __init__(self, dataset: ImageSource, image_size: int):
        self.dataset, self.image_size = dataset, image_size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tensor:
        return eval_view(self.dataset.read(index), self.image_size)


def embed(backbone: nn.Module, split: ImageSource, cfg: Config, device: torch.device,
          what: str) -> np.ndarray:
    """L2-normalised backbone features [N, D] of ``split`` through the run's eval transform, with a progress bar."""
    loader = DataLoader(_Images(split, cfg.data.image_size), batch_size=cfg.eval.batch_size, num_workers=cfg.data.num_workers,
                        generator=loader_generator())
    transform = eval_transform(cfg.augment, cfg.data.image_size).to(device)
    features, _ = extract_features(backbone.to(device), loader, device=device, transform=transform,
                                   progress=f"embedding the {what} split" if cfg.progress else None)
    return normalised(features.numpy())


def file_hash(path: str | Path) -> str:
    """sha1 of a file's bytes, read in chunks."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def embeddings_file(out: Path, what: str) -> Path:
    """Where ``cached_embeddings`` keeps a split's embeddings in ``out`` (its record: ``.json`` beside it)."""
    return out / f"embeddings_{what}.npy"


def cached_embeddings(out: Path, what: str, key: dict[str, str], compute: Callable[[], np.ndarray],
                      meta: dict[str, Any] | None = None) -> tuple[np.ndarray, bool]:
    """``out/embeddings_<what>.npy`` if its record (``.json`` beside it) matches ``key`` (the data's
    fingerprint, the checkpoint's hash), else ``compute()`` saved there, its record holding ``key``,
    ``meta``, the shape and the seconds it took; and whether it was reused."""
    array_path = embeddings_file(out, what)
    record_path = array_path.with_suffix(".json")
    try:
        record = json.loads(record_path.read_text())
        if {k: record.get(k) for k in key} == key:
            emb = np.load(array_path, allow_pickle=False)
            if emb.shape == (record["n"], record["dim"]) and emb.dtype == np.float32:
                return emb, True
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent, torn or from another version: computed again
    record_path.unlink(missing_ok=True)  # first: a kill before the new record leaves no stale pair
    t0 = time.perf_counter()
    emb = compute()
    seconds = time.perf_counter() - t0
    buffer = io.BytesIO()
    np.save(buffer, emb)
    atomic_write_bytes(array_path, buffer.getvalue())
    record = {**key, **(meta or {}), "n": emb.shape[0], "dim": emb.shape[1], "time_s": round(seconds, 3)}
    atomic_write_text(record_path, json.dumps(record, indent=2))
    return emb, False


def user_embeddings(path: str | Path, n: int, what: str = "--embeddings") -> np.ndarray:
    """A user's features (a 2-D numeric .npy, one row per training image), L2-normalised; ``what``
    names the option in the one-line errors."""
    try:
        emb = np.load(Path(path).expanduser(), allow_pickle=False)
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what} {path} is not a readable .npy array: {str(exc).splitlines()[0]}") from None
    if emb.ndim != 2 or emb.shape[1] == 0 or not np.issubdtype(emb.dtype, np.number) or np.iscomplexobj(emb):
        raise ConfigError(f"{what} {path} must be a 2-D array of real numbers [N, D], got {emb.dtype} {emb.shape}")
    if emb.shape[0] != n:
        raise ConfigError(f"{what} {path} has {emb.shape[0]} rows but the training split has {n} images")
    if not np.isfinite(emb).all():
        raise ConfigError(f"{what} {path} contains NaN or inf")
    # A zero row has no direction: normalised it would be similar to nothing and always kept.
    zero = np.flatnonzero(~np.any(emb != 0, axis=1))
    if zero.size:
        raise ConfigError(f"{what} {path} has {zero.size} all-zero rows (first: row {zero[0]}); "
                          "cosine similarity needs a non-zero feature vector per image")
    return normalised(emb)


def embeddings_record(path: str | Path) -> dict[str, Any] | None:
    """The record beside an embeddings file (``X.npy`` -> ``X.json``, as ``cached_embeddings`` writes
    it), or None when there is none that reads as a mapping."""
    try:
        record = json.loads(Path(path).expanduser().with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def pruning_embeddings(path: str, n: int, fingerprint: str) -> tuple[np.ndarray, dict[str, Any]]:
    """``pruning.embeddings``: the array (L2-normalised, one row per training image) and its record
    with the file's sha1; refused in one line when its record names other data (``fingerprint``:
    ``split_fingerprint`` of the run's data) or its rows are not the ``n`` training images."""
    what = "pruning.embeddings"
    if not Path(path).expanduser().is_file():
        raise ConfigError(f"{what} file not found: {path}")
    record = embeddings_record(path)
    if record is None:
        raise ConfigError(f"{what} {path} has no {Path(path).with_suffix('.json').name} beside it naming its data "
                          "(ssl-emp curate writes one beside embeddings_train.npy)")
    if record.get("data_fingerprint") != fingerprint:
        raise ConfigError(f"{what} {path} was made from other data (fingerprint {record.get('data_fingerprint')}, "
                          f"this data {fingerprint})")
    emb = user_embeddings(path, n, what)
    return emb, {**record, "path": str(path), "sha1": file_hash(Path(path).expanduser())}
