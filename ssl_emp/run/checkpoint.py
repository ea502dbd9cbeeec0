"""Checkpoint files: written atomically (``ssl_emp.run.files``), read without unpickling code.

Everything saved is plain tensors, numbers, strings, lists and dicts, so loading uses
``torch.load(weights_only=True)``; a file that needs more is refused, never loaded unsafely.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssl_emp.errors import ConfigError
from ssl_emp.run.layout import RunLayout
from ssl_emp.settings import Config, config_from_dict


def _reason(exc: Exception) -> str:
    """One line on why ``torch.load(weights_only=True)`` failed, without torch's advice to retry
    with ``weights_only=False`` (that would run whatever code the file holds)."""
    text = str(exc)
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if unsafe:
        return f"it holds a Python object ({unsafe.group(1)}) that is not loaded for safety"
    if "Weights only load failed" in text:
        return "it holds Python objects that are not loaded for safety"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def safe_torch_load(path: str | Path, what: str = "file", mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` on CPU (``mmap``: its tensors memory-mapped from the file,
    read as used); any failure is a one-line ``ConfigError``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types here (UnpicklingError, KeyError, EOFError, ...)
        raise ConfigError(f"{what} {path} is corrupt or not an ssl-emp file: {_reason(exc)}") from exc


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by ``atomic_torch_save``; a one-line ``ConfigError`` if it cannot be."""
    path = Path(path)
    if path.is_dir():
        final = RunLayout(path).final  # a run folder: name the file the user most likely meant
        hint = f" (the run's final checkpoint is {final})" if final.is_file() else " (pass the .pt file)"
        raise ConfigError(f"checkpoint {path} is a folder, not a file{hint}")
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    ckpt = safe_torch_load(path, "checkpoint")
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ConfigError(f"checkpoint {path} is not an ssl-emp checkpoint (no model/config entries)")
    return ckpt


def checkpoint_config(ckpt: dict[str, Any], path: str | Path) -> Config:
    """The run's config saved in ``ckpt``; one this version cannot read is a ``ConfigError`` naming ``path``."""
    try:
        return config_from_dict(ckpt["config"])
    except ConfigError as exc:  # e.g. a key of another ssl-emp version: the message alone would not say where
        raise ConfigError(f"checkpoint {path} holds a config this version of ssl-emp cannot read: {exc}") from exc


def dtype_mismatch(model: nn.Module, state: dict[str, Any]) -> str | None:
    """A tensor of ``state`` whose values are not of the kind of ``model``'s (floating or not), which
    ``load_state_dict`` would cast without a word (int64 weights to float); None if there is none."""
    for key, expected in model.state_dict().items():
        value = state.get(key)
        if isinstance(expected, torch.Tensor) and isinstance(value, torch.Tensor) \
                and value.is_floating_point() != expected.is_floating_point():
            return f"'{key}' holds {value.dtype} values but the model's are {expected.dtype}"
    return None
