"""DynamicPruner: per-epoch sample selection for contrastive pretraining.

Implements EMP_SSL.md (the method spec; summary in README "Method"): EMP (Xiao et al., "EMP: Enhance Memory in Data Pruning",
arXiv 2408.16031), the dynamic pruning baselines of Raju et al. (arXiv 2111.12621) and InfoBatch
(Qin et al., ICLR 2024, arXiv 2303.04947), with exact budgets, seeded selection, checkpointable
state and identical state on every rank under torch.distributed.
"""

from __future__ import annotations

import csv
import math
import numbers
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ssl_emp.errors import ConfigError
from ssl_emp.pruning.distributed import all_gather_batch, world_info
from ssl_emp.pruning.methods import (
    DEFAULTS,
    METHOD_PARAMS,
    METHODS,
    RULES,
    SelectionContext,
    exact_fraction,
    make_generator,
)
from ssl_emp.pruning.sampler import PrunedSampler
from ssl_emp.pruning.score import memory_strength
from ssl_emp.pruning.state import SampleTable

MAX_PRUNING_RATE = 0.95
_STATE_VERSION = 1
_HIST_BINS = 32  # count_histogram never has more entries than this
_ALIGN_SLACK = 1e-3  # cosine similarities may overshoot ±1 by rounding; more is a caller bug

# name -> (predicate, human-readable range) for the keyword parameters.
_RANGES: dict[str, tuple[Any, str]] = {
    "alpha": (lambda x: 0 < x <= 1, "in (0, 1]"),
    "gamma": (lambda x: 0 < x <= 1, "in (0, 1]"),
    "rho": (lambda x: 0 < x <= 1, "in (0, 1]"),
    "beta": (lambda x: x >= 0, ">= 0"),
    "epsilon": (lambda x: 0 <= x <= 1, "in [0, 1]"),
    "ucb_c": (lambda x: x >= 0, ">= 0"),
    "infobatch_prune_prob": (lambda x: 0 <= x < 1, "in [0, 1)"),
    "infobatch_delta": (lambda x: 0 <= x <= 1, "in [0, 1]"),
}


def _integer(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    out = int(value)
    if (low is not None and out < low) or (high is not None and out > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{name} must be {bounds}, got {out}")
    return out


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _finite_mean(values: Tensor) -> float | None:
    values = values[values.isfinite()]
    return float(values.mean()) if values.numel() else None


class DynamicPruner:
    """Chooses each epoch's training subset and tracks the per-sample statistics behind it.

    Call ``set_epoch(t)`` before each epoch, iterate a DataLoader built on ``sampler()``, and
    pass each batch's per-sample ``loss``/``align`` to ``update``, which returns the loss weights.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        method: str = "emp",
        pruning_rate: float = 0.0,
        epochs: int,
        seed: int = 0,
        **params: float,
    ) -> None:
        self.num_samples = _integer("num_samples", num_samples, low=1)
        if method not in RULES:
            raise ConfigError(f"unknown pruning method {method!r} (choose from {', '.join(METHODS)})")
        self.method = method
        rate = _real("pruning_rate", pruning_rate)
        if not 0 <= rate <= MAX_PRUNING_RATE:
            raise ConfigError(f"pruning_rate must be in [0, {MAX_PRUNING_RATE}], got {rate}")
        if method == "full" and rate != 0:
            raise ConfigError(f"method 'full' trains on all data: pruning_rate must be 0, got {rate}")
        self.pruning_rate = rate
        self.epochs = _integer("epochs", epochs, low=1)
        self.seed = _integer("seed", seed)
        self.params = self._resolve_params(method, params)
        # InfoBatch scores by the most recent loss: an EMA with rate 1.
        self._alpha = 1.0 if method == "infobatch" else self.params["alpha"]
        k = math.ceil((1 - exact_fraction(rate)) * self.num_samples)
        self.budget: int | None = None if method == "infobatch" else k
        self.table = SampleTable.empty(self.num_samples)
        self._epoch = -1
        self._kept: Tensor | None = None
        self._upweight: Tensor | None = None
        self._epoch_seen = torch.zeros(self.num_samples, dtype=torch.bool)
        self._visits = 0
        self._steps = 0
        self._visits_per_epoch: list[int] = []
        self._history: dict[int, np.ndarray] = {}  # epoch -> packed kept mask (N/8 bytes)

    @staticmethod
    def _resolve_params(method: str, params: dict[str, object]) -> dict[str, float]:
        allowed = METHOD_PARAMS[method]
        for name in params:
            if name not in allowed:
                raise ConfigError(f"unknown parameter {name!r} for method {method!r} (allowed: {', '.join(allowed)})")
        resolved = {name: DEFAULTS[name] for name in allowed}
        for name, value in params.items():
            number = _real(name, value)
            check, text = _RANGES[name]
            if not check(number):
                raise ConfigError(f"{name} must be {text}, got {number}")
            resolved[name] = number
        return resolved

    # ------------------------------------------------------------------ epoch selection
    @property
    def epoch(self) -> int:
        """The epoch last set (-1 before the first ``set_epoch``)."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch``'s kept set from the current state (idempotent per epoch).

        The set is a function of (state, seed, epoch) only; a repeated call for the current epoch
        keeps the set already chosen, so a run resumed mid-epoch trains the same samples.
        """
        epoch = _integer("epoch", epoch, low=0, high=self.epochs - 1)
        if epoch == self._epoch:
            return
        if epoch < self._epoch:
            raise ConfigError(f"epochs must not go backwards: got epoch {epoch} after {self._epoch}")
        ctx = SelectionContext(
            table=self.table,
            epoch=epoch,
            epochs=self.epochs,
            budget=self.budget if self.budget is not None else self.num_samples,
            params=self.params,
            seed=self.seed,
            generator=make_generator(self.seed, epoch, "select"),
        )
        selection = RULES[self.method](ctx)
        self._install(epoch, selection.kept, selection.upweight)
        self._epoch_seen.zero_()
        self._visits_per_epoch.extend([0] * (epoch + 1 - len(self._visits_per_epoch)))

    def _install(self, epoch: int, kept: Tensor, upweight: Tensor | None) -> None:
        self._epoch = epoch
        self._kept = kept
        self._upweight = upweight
        mask = torch.zeros(self.num_samples, dtype=torch.bool)
        mask[kept] = True
        self._history[epoch] = np.packbits(mask.numpy())

    def kept_indices(self, epoch: int | None = None) -> Tensor:
        """Sorted int64 kept set of ``epoch`` (default: current; any epoch selected here)."""
        if epoch is None or epoch == self._epoch:
            if self._kept is None:
                raise ConfigError("no epoch selected yet: call set_epoch(epoch) first")
            return self._kept.clone()
        packed = self._history.get(epoch) if isinstance(epoch, int) else None
        if packed is None:
            raise ConfigError(f"kept set of epoch {epoch!r} is not available (selected here: {sorted(self._history)})")
        mask = np.unpackbits(packed, count=self.num_samples).astype(bool)
        return torch.from_numpy(mask).nonzero().flatten()

    def epoch_order(self) -> Tensor:
        """The current kept set in this epoch's seeded random order (same on every rank)."""
        if self._kept is None:
            raise ConfigError("no epoch selected yet: call pruner.set_epoch(epoch) before iterating")
        gen = make_generator(self.seed, self._epoch, "order")
        return self._kept[torch.randperm(self._kept.numel(), generator=gen)]

    def epoch_size(self) -> int:
        """Size of the current kept set (before any epoch: epoch 0's size, N for infobatch)."""
        if self._kept is not None:
            return self._kept.numel()
        return self.budget if self.budget is not None else self.num_samples

    def sampler(self, rank: int | None = None, world_size: int | None = None) -> PrunedSampler:
        """A DataLoader sampler that always serves the epoch last passed to ``set_epoch``."""
        return PrunedSampler(self, rank=rank, world_size=world_size)

    # ------------------------------------------------------------------ per-step update
    def update(self, idx: Tensor, loss: Tensor, align: Tensor | None = None) -> Tensor:
        """Record a batch's per-sample statistics; returns loss weights shaped like ``loss``.

        Weights are 1 except InfoBatch's kept low-loss samples (1 / (1 − p)). Each sample updates
        the table at most once per epoch: later repeats in the same epoch (DistributedSampler
        padding) are ignored for the table and for visits. Under torch.distributed every rank
        must call this once per step; the batch is all-gathered so all tables stay identical.
        """
        if self._epoch < 0:
            raise ConfigError("no epoch selected yet: call set_epoch(epoch) before update()")
        if align is None and self.method == "emp":
            raise ConfigError("method 'emp' needs the per-sample align tensor, got align=None")
        idx_c, loss_c, align_c = self._checked_cpu(idx, loss, align)
        weights = torch.ones_like(loss_c)
        if self._upweight is not None:
            scale = 1.0 / (1.0 - self.params["infobatch_prune_prob"])
            weights = torch.where(self._upweight[idx_c], scale, 1.0).to(torch.float64)
        _, world = world_info()
        if world > 1:
            idx_c, loss_c, align_c = all_gather_batch(idx_c, loss_c, align_c)
        self._observe(idx_c, loss_c, align_c)
        self._steps += 1
        return weights.to(device=loss.device, dtype=loss.dtype, non_blocking=True)

    def _checked_cpu(self, idx: Tensor, loss: Tensor, align: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Validate the batch and return CPU (int64, float64, float64; NaN align = missing)."""
        named = [("idx", idx), ("loss", loss)] + ([] if align is None else [("align", align)])
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
        # Overlap the device->host copies and synchronise once (non_blocking D2H needs a sync).
        on_cuda = [t.device for _, t in named if t.device.type == "cuda"]
        moved = [t.detach().to("cpu", non_blocking=bool(on_cuda)) for _, t in named]
        if on_cuda:
            torch.cuda.current_stream(on_cuda[0]).synchronize()
        idx_c = moved[0].to(torch.int64)
        loss_c = moved[1].to(torch.float64)
        if idx_c.numel():
            low, high = int(idx_c.min()), int(idx_c.max())
            if low < 0 or high >= self.num_samples:
                bad = low if low < 0 else high
                raise ConfigError(f"index {bad} out of range [0, {self.num_samples})")
        finite = loss_c.isfinite()
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0])
            raise ConfigError(f"loss must be finite, got {float(loss_c[bad])} for index {int(idx_c[bad])}")
        if align is None:
            return idx_c, loss_c, torch.full_like(loss_c, float("nan"))
        align_c = moved[2].to(torch.float64)
        ok = align_c.isfinite() & (align_c.abs() <= 1 + _ALIGN_SLACK)
        if not bool(ok.all()):
            bad = int((~ok).nonzero()[0])
            raise ConfigError(
                f"align must be a finite similarity in [-1, 1], got {float(align_c[bad])} for index {int(idx_c[bad])}"
            )
        return idx_c, loss_c, align_c.clamp(-1.0, 1.0)

    def _observe(self, idx: Tensor, loss: Tensor, align: Tensor) -> None:
        if idx.numel() == 0:
            return
        # First occurrence of each index in this batch, vectorised (no Python loop).
        uniq, inverse = torch.unique(idx, return_inverse=True)
        positions = torch.arange(idx.numel())
        first = torch.full((uniq.numel(),), idx.numel(), dtype=torch.int64)
        first.scatter_reduce_(0, inverse, positions, reduce="amin")
        fresh = ~self._epoch_seen[uniq]
        rows, samples = first[fresh], uniq[fresh]
        self.table.observe(samples, loss[rows], align[rows], self._epoch, self._alpha, self.params["gamma"])
        self._epoch_seen[samples] = True
        self._visits += samples.numel()
        self._visits_per_epoch[self._epoch] += samples.numel()

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict[str, Any]:
        """Budget accounting (EMP_SSL.md): visits, steps and achieved pruning rates."""
        done = self._epoch + 1
        n = self.num_samples
        return {
            "method": self.method,
            "target_rate": self.pruning_rate,
            "budget": self.budget,
            "achieved_rate": 1 - self._visits / (n * done) if done else None,
            "achieved_rate_total": 1 - self._visits / (n * self.epochs),
            "sample_visits": self._visits,
            "optimizer_steps": self._steps,
            "epochs_done": done,
            "epochs": self.epochs,
            "num_samples": n,
            "visits_per_epoch": list(self._visits_per_epoch),
        }

    def memory(self) -> Tensor:
        """Memory strength of every sample as the next epoch's selection will see it."""
        t = self.table
        return memory_strength(t.align, t.last_epoch, t.count, self._epoch + 1, self.params["rho"])

    def epoch_diagnostics(self) -> dict[str, Any]:
        """LFL diagnostics for the current epoch; call after the epoch's updates."""
        t = self.table
        n = self.num_samples
        count = t.count.to(torch.float64)
        mean_count = float(count.mean())
        kept_mask = torch.zeros(n, dtype=torch.bool)
        if self._kept is not None:
            kept_mask[self._kept] = True
        width = max(1, math.ceil((int(t.count.max()) + 1) / _HIST_BINS))
        histogram = torch.bincount(t.count // width)
        epoch_visits = self._visits_per_epoch[self._epoch] if self._epoch >= 0 else 0
        return {
            "epoch": self._epoch,
            "keep_fraction": epoch_visits / n,
            "selected_fraction": kept_mask.sum().item() / n,
            "cumulative_visits": self._visits,
            "count_mean": mean_count,
            "count_cv": float(count.std(correction=0)) / mean_count if mean_count > 0 else None,
            "never_trained_fraction": float((t.count == 0).to(torch.float64).mean()),
            "count_histogram": histogram.tolist(),
            "count_histogram_edges": [i * width for i in range(histogram.numel())],
            "mean_memory": float(self.memory().mean()),
            "kept_loss_mean": _finite_mean(t.loss[kept_mask]),
            "pruned_loss_mean": _finite_mean(t.loss[~kept_mask]),
            "kept_align_mean": _finite_mean(t.align[kept_mask]),
            "pruned_align_mean": _finite_mean(t.align[~kept_mask]),
        }

    def export_table(self, path: str | os.PathLike[str], labels: Sequence[Any] | None = None) -> None:
        """Write the table as CSV (index,count,loss,align,memory,last_epoch[,label]) atomically."""
        path = Path(path)
        if not path.parent.is_dir():
            raise ConfigError(f"directory for the table does not exist: {path.parent}")
        t = self.table
        columns = [
            range(self.num_samples),
            t.count.tolist(),
            t.loss.tolist(),
            t.align.tolist(),
            self.memory().tolist(),
            t.last_epoch.tolist(),
        ]
        header = ["index", "count", "loss", "align", "memory", "last_epoch"]
        if labels is not None:
            label_list = labels.tolist() if hasattr(labels, "tolist") else list(labels)
            if len(label_list) != self.num_samples:
                raise ConfigError(f"labels has {len(label_list)} entries, expected num_samples={self.num_samples}")
            columns.append(label_list)
            header.append("label")
        # Temp file in the same directory + os.replace: readers never see a half-written table.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                writer.writerows(zip(*columns, strict=True))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # ------------------------------------------------------------------ checkpointing
    def _config(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "method": self.method,
            "pruning_rate": self.pruning_rate,
            "epochs": self.epochs,
            "seed": self.seed,
            "params": dict(self.params),
        }

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors/ints/floats/strs (loads with ``torch.load(weights_only=True)``)."""
        empty_long = torch.zeros(0, dtype=torch.int64)
        return {
            "version": _STATE_VERSION,
            "config": self._config(),
            "table": self.table.state_dict(),
            "epoch": self._epoch,
            "kept": empty_long if self._kept is None else self._kept.clone(),
            "has_upweight": int(self._upweight is not None),
            "upweight": (torch.zeros(0, dtype=torch.bool) if self._upweight is None else self._upweight.clone()),
            "epoch_seen": self._epoch_seen.clone(),
            "sample_visits": self._visits,
            "optimizer_steps": self._steps,
            "visits_per_epoch": list(self._visits_per_epoch),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` saved by a pruner with the same configuration."""
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            got = state.get("version") if isinstance(state, dict) else type(state).__name__
            raise ConfigError(f"not a DynamicPruner state_dict of version {_STATE_VERSION}: got {got!r}")
        saved = state["config"]
        for key, value in self._config().items():
            if saved.get(key) != value:
                raise ConfigError(f"state_dict was saved with {key}={saved.get(key)!r}, this pruner has {value!r}")
        self.table.load_state_dict(state["table"])
        self._epoch_seen = state["epoch_seen"].to(torch.bool).clone()
        self._visits = int(state["sample_visits"])
        self._steps = int(state["optimizer_steps"])
        self._visits_per_epoch = [int(v) for v in state["visits_per_epoch"]]
        self._history = {}
        self._epoch, self._kept, self._upweight = -1, None, None
        if int(state["epoch"]) >= 0:
            upweight = state["upweight"].to(torch.bool).clone() if state["has_upweight"] else None
            self._install(int(state["epoch"]), state["kept"].to(torch.int64).clone(), upweight)
