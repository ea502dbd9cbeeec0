"""Per-sample state table for dynamic data pruning.

One row per training image, kept on the CPU and saved in every checkpoint (EMP_SSL.md (the method spec; summary in README "Method"),
"Per-sample state"). The columns feed the EMP score (Xiao et al., arXiv 2408.16031), ε-greedy
and UCB selection (Raju et al., arXiv 2111.12621) and InfoBatch (Qin et al., arXiv 2303.04947).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from ssl_emp.errors import ConfigError


@dataclass
class SampleTable:
    """Column store of per-sample statistics; every column has one entry per sample.

    ``loss`` and ``align`` are EMAs and NaN until the first observation (which initialises them);
    ``loss_mean``/``loss_m2`` are Welford running statistics of the raw loss, used by UCB.
    """

    loss: Tensor  # float64 EMA of the per-sample loss, rate alpha
    align: Tensor  # float64 EMA of the view alignment, rate gamma
    last_epoch: Tensor  # int64, -1 until trained
    count: Tensor  # int64, times trained (at most once per epoch)
    loss_mean: Tensor  # float64 Welford running mean of the raw loss
    loss_m2: Tensor  # float64 Welford sum of squared deviations of the raw loss

    @classmethod
    def empty(cls, num_samples: int) -> SampleTable:
        """A table in which no sample has been trained yet."""
        nan = torch.full((num_samples,), float("nan"), dtype=torch.float64)
        return cls(
            loss=nan.clone(),
            align=nan.clone(),
            last_epoch=torch.full((num_samples,), -1, dtype=torch.int64),
            count=torch.zeros(num_samples, dtype=torch.int64),
            loss_mean=torch.zeros(num_samples, dtype=torch.float64),
            loss_m2=torch.zeros(num_samples, dtype=torch.float64),
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

    def observe(self, idx: Tensor, loss: Tensor, align: Tensor, epoch: int, alpha: float, gamma: float) -> None:
        """Record one observation per row of ``idx`` (which must be unique; float64 CPU inputs).

        ``align`` entries that are NaN mean "not provided" and leave the align EMA unchanged.
        """
        old = self.loss[idx]
        self.loss[idx] = torch.where(old.isnan(), loss, (1 - alpha) * old + alpha * loss)
        old = self.align[idx]
        new = torch.where(old.isnan(), align, (1 - gamma) * old + gamma * align)
        self.align[idx] = torch.where(align.isnan(), old, new)
        # Welford: numerically stable running mean/variance without keeping the history.
        n = self.count[idx] + 1
        delta = loss - self.loss_mean[idx]
        mean = self.loss_mean[idx] + delta / n
        self.loss_m2[idx] += delta * (loss - mean)
        self.loss_mean[idx] = mean
        self.count[idx] = n
        self.last_epoch[idx] = epoch

    def state_dict(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name).clone() for f in fields(self)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for f in fields(self):
            value = state.get(f.name)
            ref = getattr(self, f.name)
            if not isinstance(value, Tensor) or value.shape != ref.shape:
                got = None if value is None else tuple(getattr(value, "shape", ()))
                raise ConfigError(
                    f"state_dict table column {f.name!r} must be a tensor of shape {tuple(ref.shape)}, got {got}"
                )
            setattr(self, f.name, value.detach().to("cpu", ref.dtype).clone())
