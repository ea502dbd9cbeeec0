"""The per-step buffer behind ``DynamicPruner.update()`` and ``flush()``.

``update()`` must not synchronise with the device, so it checks metadata only and keeps each
step's tensors where they live; ``flush()`` brings the epoch's buffer to the host in one copy per
signal and checks the values there. Kept apart from the pruner so that selection and bookkeeping
read without this tensor plumbing, which none of them needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ssl_emp.errors import ConfigError
from ssl_emp.pruning.state import SIGNALS

_ALIGN_SLACK = 1e-3  # cosine similarities may overshoot ±1 by rounding; more is a caller bug
_ENTROPY_SLACK = 1e-3  # -Σ p log p may dip below 0 by rounding


def check_batch_metadata(idx: Tensor, loss: Tensor, given: dict[str, Tensor | None]) -> None:
    """Types, shapes and dtypes only: metadata, so checking costs no host synchronisation."""
    named = [("idx", idx), ("loss", loss)] + [(name, t) for name, t in given.items() if t is not None]
    for name, t in named:
        if not isinstance(t, Tensor):
            raise ConfigError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 1:
            raise ConfigError(f"{name} must be 1-D (one value per sample), got shape {tuple(t.shape)}")
        if t.shape != idx.shape:
            raise ConfigError(f"{name} shape {tuple(t.shape)} does not match idx shape {tuple(idx.shape)}")
    if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
        raise ConfigError(f"idx must be an integer tensor, got dtype {idx.dtype}")
    for name, t in named[1:]:
        if not t.dtype.is_floating_point:
            raise ConfigError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


@dataclass(frozen=True)
class BufferedStep:
    """One update() call, kept as given (idx on the CPU, signals on the training device)."""

    idx: Tensor
    loss: Tensor
    align: Tensor | None
    entropy: Tensor | None
    # SCAN's per-direction losses (view 1 -> 2, 2 -> 1), buffered only in the epochs that mark them.
    loss_12: Tensor | None = None
    loss_21: Tensor | None = None


def detach_for_buffer(t: Tensor) -> Tensor:
    """``t`` detached; copied (on its device, no sync) when it is a view into a larger buffer,
    so the buffer does not keep e.g. a whole logits matrix alive until flush()."""
    t = t.detach()
    return t.clone() if t.untyped_storage().nbytes() > t.numel() * t.element_size() else t


def _to_host(parts: list[Tensor], dtype: torch.dtype) -> Tensor:
    """Concatenate where the parts live, then one device->host copy (not one per step)."""
    if any(p.device != parts[0].device for p in parts):
        parts = [p.to("cpu") for p in parts]
    return torch.cat(parts).to("cpu", dtype)


def collect_on_host(steps: list[BufferedStep]) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor], Tensor]:
    """The buffer on the CPU: int64 idx, float64 signals (NaN where not given), bool masks of the
    rows that gave each optional signal, and the int64 per-step sizes."""
    sizes = torch.tensor([s.idx.numel() for s in steps], dtype=torch.int64)
    total = int(sizes.sum())
    if not steps:
        idx = torch.zeros(0, dtype=torch.int64)
        signals = {"loss": torch.zeros(0, dtype=torch.float64)}
    else:
        idx = _to_host([s.idx for s in steps], torch.int64)
        signals = {"loss": _to_host([s.loss for s in steps], torch.float64)}
    given = {}
    for name in SIGNALS[1:]:
        parts = [getattr(s, name) for s in steps]
        given[name] = torch.repeat_interleave(torch.tensor([p is not None for p in parts], dtype=torch.bool), sizes)
        if all(p is None for p in parts):
            signals[name] = torch.full((total,), float("nan"), dtype=torch.float64)
        else:
            filled = [p if p is not None else torch.full_like(s.loss, float("nan")) for p, s in zip(parts, steps, strict=True)]
            signals[name] = _to_host(filled, torch.float64)
    return idx, signals, given, sizes


def collect_directions(steps: list[BufferedStep], idx: Tensor) -> tuple[Tensor, Tensor]:
    """The buffered (loss_12, loss_21) on the CPU as float64, checked finite (a ConfigError naming
    the first bad index); every step must hold both (the pruner buffers them for all or none)."""
    if not steps:
        empty = torch.zeros(0, dtype=torch.float64)
        return empty, empty.clone()
    out = []
    for name in ("loss_12", "loss_21"):
        parts = [getattr(s, name) for s in steps]
        if any(p is None for p in parts):
            raise ConfigError(f"{name} was not buffered for every step of the epoch")
        values = _to_host(parts, torch.float64)
        ok = values.isfinite()
        if not bool(ok.all()):
            bad = int((~ok).nonzero()[0])
            raise ConfigError(f"{name} must be finite, got {float(values[bad])} for index {int(idx[bad])}")
        out.append(values)
    return out[0], out[1]


def validate_buffer(idx: Tensor, signals: dict[str, Tensor], given: dict[str, Tensor], num_samples: int) -> None:
    """Check the values (ConfigError naming the first bad one) and clamp rounding overshoot."""
    if idx.numel() == 0:
        return
    low, high = int(idx.min()), int(idx.max())
    if low < 0 or high >= num_samples:
        raise ConfigError(f"index {low if low < 0 else high} out of range [0, {num_samples})")
    loss, align, entropy = signals["loss"], signals["align"], signals["entropy"]
    checks = [
        ("loss must be finite", loss, loss.isfinite()),
        ("align must be a finite similarity in [-1, 1]", align,
         ~given["align"] | (align.isfinite() & (align.abs() <= 1 + _ALIGN_SLACK))),
        ("entropy must be finite and >= 0", entropy,
         ~given["entropy"] | (entropy.isfinite() & (entropy >= -_ENTROPY_SLACK))),
    ]
    for text, values, ok in checks:
        if not bool(ok.all()):
            bad = int((~ok).nonzero()[0])
            raise ConfigError(f"{text}, got {float(values[bad])} for index {int(idx[bad])}")
    signals["align"] = align.clamp(-1.0, 1.0)
    signals["entropy"] = entropy.clamp_min(0.0)
