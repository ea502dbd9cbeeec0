"""Per-sample state for dynamic data pruning: the signals the pruner knows, and the table it keeps.

``SIGNAL_SPECS`` is the one list of per-sample signals a model may hand the pruner with each
batch (a model declares the ones it returns in its ``signals``; ``DynamicPruner(signals=...)``
accepts exactly those), with how each is checked and whether the table keeps it. The table has one
row per training image, kept on the CPU and saved in every checkpoint (docs/method.md,
"Per-sample state", "Memory term and EMP score" and "Diagnostics, each epoch"). Its columns feed
the EMP score (Xiao et al., arXiv 2408.16031), ε-greedy and UCB selection (Raju et al., arXiv
2111.12621), InfoBatch (Qin et al., arXiv 2303.04947) and SCAN (Guo & Kankanhalli, arXiv 2411.09126).

A new signal is one entry in ``SIGNAL_SPECS``: a tracked one gets its table columns, buffering,
all-gathering, checking and diagnostics from it; the method that reads it reads ``table.<name>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ssl_emp.errors import ConfigError

_ALIGN_SLACK = 1e-3  # cosine similarities may overshoot ±1 by rounding; more is a caller bug
_ENTROPY_SLACK = 1e-3  # -Σ p log p may dip below 0 by rounding


@dataclass(frozen=True)
class Signal:
    """How the pruner treats one per-sample signal.

    ``valid`` maps the epoch's values (float64, on the CPU) to a mask of acceptable ones; ``text``
    says what they must be, for the error naming the first bad one. ``clamp``: the bounds that
    rounding may overshoot within ``valid``'s slack; values are clamped into them.

    ``tracked``: the table keeps an EMA of it (rate alpha for the loss, gamma for the others) and
    its latest and previous raw observations, the columns ``<name>``, ``<name>_last`` and
    ``<name>_prev``. An untracked signal is buffered only in the epochs whose method reads it
    (SCAN's per-direction losses, in its probe epochs) and never enters the table or a checkpoint.

    ``since``: the first pruner state version whose table holds the signal's EMA column (the raw
    columns exist from version 2); an older state lacks them, and they start fresh. A new tracked
    signal therefore comes with a new state version.
    """

    valid: Callable[[Tensor], Tensor]
    text: str
    tracked: bool = True
    clamp: tuple[float | None, float | None] = (None, None)
    since: int = 2


def _finite(values: Tensor) -> Tensor:
    return values.isfinite()


#: Every signal the pruner knows, the loss first (always given: ``update``'s ``loss`` argument).
SIGNAL_SPECS: dict[str, Signal] = {
    "loss": Signal(_finite, "finite", since=1),
    "align": Signal(lambda v: v.isfinite() & (v.abs() <= 1 + _ALIGN_SLACK), "a finite similarity in [-1, 1]",
                    clamp=(-1.0, 1.0), since=1),
    # The prediction entropy: the supervised objective's memory signal.
    "entropy": Signal(lambda v: v.isfinite() & (v >= -_ENTROPY_SLACK), "finite and >= 0", clamp=(0.0, None)),
    # Each direction's loss (view 1 -> 2, 2 -> 1), which SCAN marks separately.
    "loss_12": Signal(_finite, "finite", tracked=False),
    "loss_21": Signal(_finite, "finite", tracked=False),
}
#: SCAN's two directions: passed together or not at all (then both read the loss).
DIRECTIONS: tuple[str, str] = ("loss_12", "loss_21")
# Columns every table has, whatever the signals: how often and when each sample was trained, and
# the Welford running statistics of its raw loss (UCB), all present since version 1.
_BOOKKEEPING = ("last_epoch", "count", "loss_mean", "loss_m2")
_RAW_SINCE = 2  # the first state version with the *_last / *_prev columns


def tracked_signals() -> tuple[str, ...]:
    """The names of the signals a new table keeps columns for, the loss first."""
    return tuple(name for name, spec in SIGNAL_SPECS.items() if spec.tracked)


def signal_spec(name: str) -> Signal:
    """The spec of a known signal, or a ConfigError listing them."""
    spec = SIGNAL_SPECS.get(name)
    if spec is None:
        raise ConfigError(f"unknown signal {name!r} (known: {', '.join(n for n in SIGNAL_SPECS if n != 'loss')})")
    return spec


class SampleTable:
    """Column store of per-sample statistics; every column has one entry per sample.

    Columns, read as attributes (``table.loss``, ``table.align_last``): for each tracked signal its
    EMA ``<name>`` (float64, NaN until the first observation, which initialises it) and its two
    most recent raw observations ``<name>_last`` / ``<name>_prev`` (float32: they only feed the
    repeatability diagnostic's rank correlation, and half the memory matters at ImageNet scale);
    ``last_epoch`` (int64, -1 until trained), ``count`` (int64, times trained, at most once per
    epoch) and ``loss_mean`` / ``loss_m2`` (float64 Welford running statistics of the raw loss, for UCB).
    """

    def __init__(self, columns: dict[str, Tensor], signals: tuple[str, ...]) -> None:
        self.columns = columns
        self.signals = signals  # the tracked signals, the loss first

    @classmethod
    def empty(cls, num_samples: int, signals: tuple[str, ...] | None = None) -> SampleTable:
        """A table in which no sample has been trained yet (columns for ``signals``: default, all tracked ones)."""
        signals = tracked_signals() if signals is None else signals
        nan64 = torch.full((num_samples,), float("nan"), dtype=torch.float64)
        nan32 = torch.full((num_samples,), float("nan"), dtype=torch.float32)
        columns = {name: nan64.clone() for name in signals}
        columns |= {
            "last_epoch": torch.full((num_samples,), -1, dtype=torch.int64),
            "count": torch.zeros(num_samples, dtype=torch.int64),
            "loss_mean": torch.zeros(num_samples, dtype=torch.float64),
            "loss_m2": torch.zeros(num_samples, dtype=torch.float64),
        }
        columns |= {f"{name}_{which}": nan32.clone() for name in signals for which in ("last", "prev")}
        return cls(columns, signals)

    def __getattr__(self, name: str) -> Tensor:
        # Only reached for names that are not ordinary attributes: the columns.
        columns = self.__dict__.get("columns", {})
        if name in columns:
            return columns[name]
        raise AttributeError(f"SampleTable has no column {name!r}")

    @property
    def num_samples(self) -> int:
        return self.columns["count"].numel()

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

        ``signals`` maps each of the table's signals to its values; NaN means "not provided" and
        leaves that signal's columns unchanged (the loss is always provided).
        """
        loss = signals["loss"]
        for name in self.signals:
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
        column = self.columns[name]
        old = column[idx]
        ema = torch.where(old.isnan(), new, (1 - rate) * old + rate * new)
        column[idx] = torch.where(new.isnan(), old, ema)

    def _raw(self, name: str, idx: Tensor, new: Tensor) -> None:
        last, prev = self.columns[f"{name}_last"], self.columns[f"{name}_prev"]
        given = ~new.isnan()
        old_last = last[idx]
        prev[idx] = torch.where(given, old_last, prev[idx])
        last[idx] = torch.where(given, new.to(last.dtype), old_last)

    def state_dict(self) -> dict[str, Tensor]:
        return {name: column.clone() for name, column in self.columns.items()}

    def _since(self, column: str) -> int:
        """The first state version that holds ``column``."""
        if column in _BOOKKEEPING:
            return 1
        ema = column in self.signals  # else <name>_last / <name>_prev
        spec = SIGNAL_SPECS.get(column if ema else column.rpartition("_")[0])
        since = spec.since if spec is not None else _RAW_SINCE
        return since if ema else max(_RAW_SINCE, since)

    def load_state_dict(self, state: dict[str, Tensor], version: int = 2) -> None:
        """Restore the columns; a state older than a column lacks it, and it starts fresh.

        Every column is checked before any is replaced: a bad state leaves the table as it was.
        """
        fresh = SampleTable.empty(self.num_samples, self.signals)
        restored = {}
        for name, ref in self.columns.items():
            value = state.get(name) if isinstance(state, dict) else None
            if value is None and version < self._since(name):
                restored[name] = fresh.columns[name]
                continue
            if not isinstance(value, Tensor) or value.shape != ref.shape:
                got = None if value is None else tuple(getattr(value, "shape", ()))
                raise ConfigError(
                    f"state_dict table column {name!r} must be a tensor of shape {tuple(ref.shape)}, got {got}"
                )
            restored[name] = value.detach().to("cpu", ref.dtype).clone()
        self.columns = restored
