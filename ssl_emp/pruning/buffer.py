"""The per-step buffer behind ``DynamicPruner.update()`` and ``flush()``.

``update()`` must not synchronise with the device, so it checks metadata only and keeps each
step's tensors where they live; ``flush()`` brings the epoch's buffer to the host in one copy per
signal and checks the values there, each signal by its spec in ``ssl_emp.pruning.state``. Kept
apart from the pruner so that selection and bookkeeping read without this tensor plumbing, which
none of them needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ssl_emp.errors import ConfigError
from ssl_emp.pruning.state import SIGNAL_SPECS


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
    """One update() call, kept as given (idx on the CPU, signals on the training device).

    ``signals`` holds ``"loss"`` and each other signal buffered for the step: the tracked ones the
    caller gave, and an untracked one only in an epoch whose method reads it.
    """

    idx: Tensor
    signals: dict[str, Tensor]

    @property
    def loss(self) -> Tensor:
        return self.signals["loss"]

    def __getattr__(self, name: str) -> Tensor | None:
        # step.align, step.loss_12, ...: a known signal by name, None where it was not buffered.
        if name in SIGNAL_SPECS:
            return self.__dict__["signals"].get(name)
        raise AttributeError(f"BufferedStep has no attribute {name!r}")


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


def collect_on_host(
    steps: list[BufferedStep], names: tuple[str, ...]
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor], Tensor]:
    """The buffer on the CPU: int64 idx, float64 values of each signal of ``names`` (the loss first;
    NaN where not given), bool masks of the rows that gave each one, and the int64 per-step sizes."""
    sizes = torch.tensor([s.idx.numel() for s in steps], dtype=torch.int64)
    total = int(sizes.sum())
    idx = _to_host([s.idx for s in steps], torch.int64) if steps else torch.zeros(0, dtype=torch.int64)
    signals, given = {}, {}
    for name in names:
        parts = [s.signals.get(name) for s in steps]
        given[name] = torch.repeat_interleave(torch.tensor([p is not None for p in parts], dtype=torch.bool), sizes)
        if all(p is None for p in parts):
            signals[name] = torch.full((total,), float("nan"), dtype=torch.float64)
        else:
            filled = [p if p is not None else torch.full_like(s.loss, float("nan")) for p, s in zip(parts, steps, strict=True)]
            signals[name] = _to_host(filled, torch.float64)
    return idx, signals, given, sizes


def collect_untracked(steps: list[BufferedStep], names: tuple[str, ...], idx: Tensor) -> list[Tensor]:
    """The buffered values of the untracked signals ``names`` on the CPU as float64, checked by
    their specs (a ConfigError naming the first bad index); every step must hold them (the pruner
    buffers them for all steps of an epoch or none)."""
    out = []
    for name in names:
        parts = [s.signals.get(name) for s in steps]
        if any(p is None for p in parts):
            raise ConfigError(f"{name} was not buffered for every step of the epoch")
        values = _to_host(parts, torch.float64) if parts else torch.zeros(0, dtype=torch.float64)
        _check(name, values, values.new_ones(values.shape, dtype=torch.bool), idx)
        out.append(values)
    return out


def _check(name: str, values: Tensor, given: Tensor, idx: Tensor) -> Tensor:
    """``values`` checked where ``given`` (ConfigError naming the first bad one), clamped by the spec."""
    spec = SIGNAL_SPECS[name]
    ok = ~given | spec.valid(values)
    if not bool(ok.all()):
        bad = int((~ok).nonzero()[0])
        raise ConfigError(f"{name} must be {spec.text}, got {float(values[bad])} for index {int(idx[bad])}")
    low, high = spec.clamp
    return values if low is None and high is None else values.clamp(low, high)


def validate_buffer(idx: Tensor, signals: dict[str, Tensor], given: dict[str, Tensor], num_samples: int) -> None:
    """Check the indices and every signal's values (ConfigError naming the first bad one), in place
    clamping rounding overshoot."""
    if idx.numel() == 0:
        return
    low, high = int(idx.min()), int(idx.max())
    if low < 0 or high >= num_samples:
        raise ConfigError(f"index {low if low < 0 else high} out of range [0, {num_samples})")
    for name in signals:
        signals[name] = _check(name, signals[name], given[name], idx)
