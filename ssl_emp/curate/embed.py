"""The embeddings ``curate`` works on: a checkpoint's backbone features of a split (the features the
kNN monitor scores, L2-normalised), cached in the output folder while the checkpoint and the data
are unchanged, or a user's own features (``--embeddings FILE.npy``: CLIP, DINOv2, ...)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

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


def cached_embeddings(out: Path, what: str, key: dict[str, str], compute) -> tuple[np.ndarray, bool]:
    """``out/embeddings_<what>.npy`` if its record (``.json`` beside it) matches ``key`` (the data's
    fingerprint, the checkpoint's hash), else ``compute()`` saved there; and whether it was reused."""
    array_path, record_path = out / f"embeddings_{what}.npy", out / f"embeddings_{what}.json"
    try:
        record = json.loads(record_path.read_text())
        if {k: record.get(k) for k in key} == key:
            emb = np.load(array_path, allow_pickle=False)
            if emb.shape == (record["n"], record["dim"]) and emb.dtype == np.float32:
                return emb, True
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent, torn or from another version: computed again
    emb = compute()
    buffer = io.BytesIO()
    np.save(buffer, emb)
    atomic_write_bytes(array_path, buffer.getvalue())
    atomic_write_text(record_path, json.dumps({**key, "n": emb.shape[0], "dim": emb.shape[1]}, indent=2))
    return emb, False


def user_embeddings(path: str | Path, n: int) -> np.ndarray:
    """A user's features (a 2-D numeric .npy, one row per training image), L2-normalised."""
    try:
        emb = np.load(Path(path).expanduser(), allow_pickle=False)
    except FileNotFoundError:
        raise ConfigError(f"--embeddings file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--embeddings {path} is not a readable .npy array: {str(exc).splitlines()[0]}") from None
    if emb.ndim != 2 or emb.shape[1] == 0 or not np.issubdtype(emb.dtype, np.number) or np.iscomplexobj(emb):
        raise ConfigError(f"--embeddings {path} must be a 2-D array of real numbers [N, D], got {emb.dtype} {emb.shape}")
    if emb.shape[0] != n:
        raise ConfigError(f"--embeddings {path} has {emb.shape[0]} rows but the training split has {n} images")
    if not np.isfinite(emb).all():
        raise ConfigError(f"--embeddings {path} contains NaN or inf")
    return normalised(emb)
