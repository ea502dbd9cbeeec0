"""Atomic checkpoint files: write to a temp file, then rename, so a crash never leaves half a file.

Everything saved is plain tensors, numbers, strings, lists and dicts, so loading uses
``torch.load(weights_only=True)`` and never unpickles code.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ssl_emp.errors import ConfigError


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` through a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by ``save_atomic``; a one-line ``ConfigError`` if it cannot be."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"checkpoint {path} is corrupt or not an ssl-emp checkpoint: {first}") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ConfigError(f"checkpoint {path} is not an ssl-emp checkpoint (no model/config entries)")
    return ckpt
