"""Per-sample state table for dynamic data pruning.

One row per training image, kept on the CPU and saved in every checkpoint (docs/method.md,
"Per-sample state", "Memory term and EMP score" and "Diagnostics, each epoch"). The columns feed the EMP
score (Xiao et al., arXiv 2408.16031), ε-greedy and UCB selection (Raju et al., arXiv 2111.12621)
and InfoBatch (Qin et al., arXiv 2303.04947).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from ssl_emp.errors import ConfigError

#: The per-sample signals; each has an EMA column and its latest / previous raw observation.
SIGNALS: tuple[str, ...] = ("loss", "align", "entropy")
# Columns of the version-1 state table; the others may be missing from an old checkpoint.
_V1_COLUMNS = ("loss", "align", "last_epoch", "count", "loss_mean", "loss_m2")


@dataclass
class SampleTable:
    """Column store of per-sample statistics; every column has one entry per sample.

    ``loss``, ``align`` and ``entropy`` are EMAs and NaN until the first observation (which
    initialises them); ``loss_mean``/``loss_m2`` are Welford running statistics of the raw loss,
    used by UCB. ``*_last``/``*_prev`` hold the two most recent raw observations of each signal
    (NaN until observed), for the repeatability diagnostic.
    """

    loss: Tensor  # float64 EMA of the per-sample loss, rate alpha
    align: Tensor  # float64 EMA of the view alignment, rate gamma
    last_epoch: Tensor  # int64, -1 until trained
    count: Tensor  # int64, times trained (at most once per epoch)
    loss_mean: Tensor  # float64 Welford running mean of the raw loss
    loss_m2: Tensor  # float64 Welford sum of squared deviations of the raw loss
    entropy: Tensor  # float64 EMA of the prediction entropy (supervised objective), rate gamma
    # float32: these only feed a rank correlation, and half the memory matters at ImageNet scale.
    loss_last: Tensor
    loss_prev: Tensor
    align_last: Tensor
    align_prev: Tensor
    entropy_last: Tensor
    entropy_prev: Tensor

    @classmethod
    def empty(cls, num_samples: int) -> SampleTable:
        """A table in which no sample has been trained yet."""
        nan64 = torch.full((num_samples,), float("nan"), dtype=torch.float64)
        nan32 = torch.full((num_samples,), float("nan"), dtype=torch.float32)
        raw = {f"{s}_{w}": nan32.clone() for s in SIGNALS for w in ("last", "prev")}
        return cls(
            loss=nan64.clone(),
            align=nan64.clone(),
            last_epoch=torch.full((num_samples,), -1, dtype=torch.int64),
            count=torch.zeros(num_samples, dtype=torch.int64),
            loss_mean=torch.zeros(num_samples, dtype=torch.float64),
            loss_m2=torch.zeros(num_samples, dtype=torch.float64),
            entropy=nan64.clone(),
            **raw,
        )

    @property
    def num_samples(self) -> int:
        return self.count.numel()

    def seen(self) -> Tensor:
        """Boolean mask of samples trained at least once."""
        return self.count > 0

    def loss_std(self) -> Tensor:
        """Population std of each sample's loss history (0 for fewer than two observations)."""
        return (self.loss_m2 / self.count.clamp_min(1)).sqrt()

    def observe(
        self, idx: Tensor, signals: dict[str, Tensor], epoch: int, alpha: float, gamma: float
    ) -> None:
        """Record one observation per row of ``idx`` (unique; float64 CPU signal values).

        ``signals`` maps each name of ``SIGNALS`` to its values; NaN means "not provided" and
        leaves that signal's columns unchanged (the loss is always provided).
        """
        loss = signals["loss"]
        for name in SIGNALS:
            self._ema(name, idx, signals[name], alpha if name == "loss" else gamma)
            self._raw(name, idx, signals[name])
        # Welford: numerically stable running mean/variance without keeping the history.
        n = self.count[idx] + 1
        delta = loss - self.loss_mean[idx]
        mean = self.loss_mean[idx] + delta / n
        self.loss_m2[idx] += delta * (loss - mean)
        self.loss_mean[idx] = mean
        self.count[idx] = n
        self.last_epoch[idx] = epoch

    def _ema(self, name: str, idx: Tensor, new: Tensor, rate: float) -> None:
        column = getattr(self, name)
        old = column[idx]
        ema = torch.where(old.isnan(), new, (1 - rate) * old + rate * new)
        column[idx] = torch.where(new.isnan(), old, ema)

    def _raw(self, name: str, idx: Tensor, new: Tensor) -> None:
        last, prev = getattr(self, f"{name}_last"), getattr(self, f"{name}_prev")
        given = ~new.isnan()
        old_last = last[idx]
        prev[idx] = torch.where(given, old_last, prev[idx])
        last[idx] = torch.where(given, new.to(last.dtype), old_last)

    def state_dict(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name).clone() for f in fields(self)}

    def load_state_dict(self, state: dict[str, Tensor], version: int = 2) -> None:
        """Restore the columns; a version-1 state lacks the newer ones, which start fresh."""
        fresh = SampleTable.empty(self.num_samples)
        for f in fields(self):
            value = state.get(f.name)
            ref = getattr(self, f.name)
            if value is None and version == 1 and f.name not in _V1_COLUMNS:
                setattr(self, f.name, getattr(fresh, f.name))
                continue
            if not isinstance(value, Tensor) or value.shape != ref.shape:
                got = None if value is None else tuple(getattr(value, "shape", ()))
                raise ConfigError(
                    f"state_dict table column {f.name!r} must be a tensor of shape {tuple(ref.shape)}, got {got}"
                )
            setattr(self, f.name, value.detach().to("cpu", ref.dtype).clone())
