"""What ``ssl-emp views`` shows: a few training images beside the views training cuts from them.

Each row is one image: its evaluation view (``eval_view``: the shorter side resized, the centre
cropped), then its augmented views as training makes them (crop, flip, colour operations; the
normalisation undone for display). The raw views (uint8 [K, V, 3, S, S], after the crop and the
flip, before the colour operations) come from ``raw_views``, the code training runs: cut from each
photograph's own pixels in the workers' path, or by the batched on-device crop for ``image_size``
squares (CIFAR, digits); the colour operations of the run's view pipeline then finish them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ssl_emp.augment import view_augmentation
from ssl_emp.data.decode import eval_view
from ssl_emp.data.load import load_data
from ssl_emp.data.source import ImageSource
from ssl_emp.data.views import cuts_views, geometric_ops, raw_views
from ssl_emp.errors import ConfigError
from ssl_emp.progress import progress_enabled
from ssl_emp.run.files import atomic_write_bytes, os_error_message

if TYPE_CHECKING:
    from ssl_emp.config import Config

MIN_CELL = 96  # px: smaller views are enlarged (nearest neighbour, by a whole factor) to be seen
PAD = 4  # px of white between cells
_MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".npy": b"\x93NUMPY"}  # what an earlier output of this command starts with


def check_output(path: str | Path, suffix: str, flag: str) -> Path:
    """An output path of ``ssl-emp views``: a ``suffix`` file, absent or one such file already
    (anything else is never replaced), in a folder that can be created."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"views {flag} {path} is a folder; give a file name")
    if path.suffix.lower() != suffix:
        raise ConfigError(f"views {flag} {path} must end in {suffix}")
    try:
        if path.exists():
            with open(path, "rb") as handle:
                if handle.read(len(_MAGIC[suffix])) != _MAGIC[suffix]:
                    raise ConfigError(f"views {flag} {path} exists and is not a {suffix[1:].upper()} file; "
                                      "choose another file name (it is never replaced)")
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(os_error_message(exc, path)) from exc
    return path


def pick(source: ImageSource, images: int, seed: int) -> list[int]:
    """``images`` distinct indices of ``source``, drawn by ``seed``, in increasing order."""
    if images > len(source):
        raise ConfigError(f"--images {images} is more than the {len(source)} training images")
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))
    return sorted(order[:images].tolist())


def augmented(raw: Tensor, cfg: Config, cut: bool, seed: int) -> Tensor:
    """uint8 [K, V, 3, S, S]: the raw views through the run's colour operations, de-normalised."""
    size = cfg.data.image_size
    pipeline = view_augmentation(cfg.augment, size, crop=not cut)
    colour = pipeline[len(geometric_ops(pipeline)):]  # after the crop and flip: jitter, grayscale, blur, normalise
    mean = torch.tensor(cfg.augment.mean).view(1, -1, 1, 1)
    std = torch.tensor(cfg.augment.std).view(1, -1, 1, 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)  # the colours' own stream: the raw views stay those of --seed
        out = torch.stack([colour(raw[:, v].float().div(255.0)) for v in range(raw.shape[1])], dim=1)
    return (out * std + mean).mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def grid(rows: list[Tensor]) -> Tensor:
    """uint8 [3, H, W]: each row's cells (uint8 [C, 3, S, S]) side by side on white, ``PAD`` apart,
    enlarged by a whole factor to at least ``MIN_CELL`` px."""
    size = rows[0].shape[-1]
    zoom = max(1, -(-MIN_CELL // size))
    cell = size * zoom
    cols = rows[0].shape[0]
    out = torch.full((3, PAD + len(rows) * (cell + PAD), PAD + cols * (cell + PAD)), 255, dtype=torch.uint8)
    for r, row in enumerate(rows):
        big = row.repeat_interleave(zoom, dim=-2).repeat_interleave(zoom, dim=-1)
        for c in range(cols):
            top, left = PAD + r * (cell + PAD), PAD + c * (cell + PAD)
            out[:, top:top + cell, left:left + cell] = big[c]
    return out


def preview(cfg: Config, images: int, views: int, seed: int) -> tuple[Tensor, Tensor]:
    """(the grid uint8 [3, H, W], the raw views uint8 [K, V, 3, S, S]) of ``images`` training images
    of the configured data set, ``views`` views each; ``cfg`` finalised."""
    with progress_enabled(cfg.progress):
        train = load_data(cfg.data).train
    size = cfg.data.image_size
    indices = pick(train, images, seed)
    raw = raw_views(train, indices, views, cfg.augment, size, seed=seed)
    shown = augmented(raw, cfg, cuts_views(train, size), seed)
    rows = [torch.cat([eval_view(train.read(i), size)[None], shown[k]]) for k, i in enumerate(indices)]
    return grid(rows), raw


def write_png(image: Tensor, path: Path) -> None:
    """uint8 [3, H, W] as a PNG at ``path``, atomically."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def write_npy(array: Tensor, path: Path) -> None:
    """A tensor as a .npy at ``path``, atomically."""
    buffer = io.BytesIO()
    np.save(buffer, array.numpy())
    atomic_write_bytes(path, buffer.getvalue())
