"""DynamicPruner: per-epoch sample selection for contrastive (and supervised) training.

Implements docs/method.md: EMP (Xiao et al., "EMP: Enhance Memory in Data Pruning",
arXiv 2408.16031), the dynamic pruning baselines of Raju et al. (arXiv 2111.12621), InfoBatch
(Qin et al., ICLR 2024, arXiv 2303.04947) and SCAN (Guo & Kankanhalli, arXiv 2411.09126;
``ssl_emp.pruning.scan``), with exact budgets, seeded selection, checkpointable state and
identical state on every rank under torch.distributed.

``update()`` never synchronises with the device: it buffers each step's tensors where they live
and returns the loss weights computed on the training device. ``flush()`` validates the buffer,
all-gathers it under torch.distributed and folds it into the table, once per epoch. The buffer
itself (what is kept, how it reaches the host, how it is checked) is ``ssl_emp.pruning.buffer``.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ssl_emp.distributed import all_gather_epoch, world_info
from ssl_emp.errors import ConfigError
from ssl_emp.pruning.buffer import (
    BufferedStep,
    check_batch_metadata,
    collect_on_host,
    collect_untracked,
    detach_for_buffer,
    validate_buffer,
)
from ssl_emp.pruning.diagnostics import table_diagnostics, write_table_csv
from ssl_emp.pruning.params import validate_params
from ssl_emp.pruning.registry import method_spec
from ssl_emp.pruning.sampler import PrunedSampler
from ssl_emp.pruning.score import memory_strength
from ssl_emp.pruning.seeding import exact_fraction, make_generator
from ssl_emp.pruning.signals import check_given, checked_inputs, declared_signals, required_signal
from ssl_emp.pruning.spec import OBJECTIVES, EpochRows, MethodState, Selection, SelectionContext
from ssl_emp.pruning.state import SampleTable

# 2: entropy and raw-observation columns, objective in the config. 3: an entry named after a stateful
# method with its state (SCAN's warm-up, cycle and candidates under "scan"); read, no longer written.
# 4: that state under METHOD_STATE, whatever the method's name (a method named "table" would have
# overwritten the table). Only a stateful method writes 4: every other method's state is unchanged, so
# it stays 2 and older code still reads it.
_STATE_VERSION = 2
_METHOD_STATE_VERSION = 4
_VERSIONS = (1, _STATE_VERSION, 3, _METHOD_STATE_VERSION)
METHOD_STATE = "method_state"


def _integer(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    out = int(value)
    if (low is not None and out < low) or (high is not None and out > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{name} must be {bounds}, got {out}")
    return out


class DynamicPruner:
    """Chooses each epoch's training subset and tracks the per-sample statistics behind it.

    Call ``set_epoch(t)`` before each epoch, iterate a DataLoader built on ``sampler()``, pass
    each batch's per-sample ``loss`` and signals (``align`` for the contrastive objective,
    ``entropy`` for the supervised one, ...) to ``update``, which returns the loss weights, and
    call ``flush()`` at the end of the epoch (required on every rank under torch.distributed;
    single-process every reader flushes).

    ``signals``: the names of the signals every ``update`` passes besides the loss, e.g. a model's
    declared ``model.signals``; each must be known to the pruning state
    (``ssl_emp.pruning.state.SIGNAL_SPECS``), and the method's own (``required_signal``) among
    them. ``update`` then takes exactly these. Without it (None) ``update`` takes any known signal,
    each optional, and checks the method's own on every call.

    ``inputs``: the per-sample arrays the method reads (``MethodSpec.inputs``, e.g. embeddings), one
    row per sample. What the method is and needs comes from its record (``ssl_emp.pruning.registry``).
    """

    def __init__(
        self,
        num_samples: int,
        *,
        method: str = "emp",
        pruning_rate: float = 0.0,
        epochs: int,
        seed: int = 0,
        objective: str = "contrastive",
        signals: Iterable[str] | None = None,
        inputs: Mapping[str, object] | None = None,
        **params: float,
    ) -> None:
        self.num_samples = _integer("num_samples", num_samples, low=1)
        self.params = validate_params(method, pruning_rate, params)
        self.method = method
        self.spec = method_spec(method)
        self.pruning_rate = float(pruning_rate)
        if objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {objective!r} (choose from {', '.join(OBJECTIVES)})")
        self.objective = objective
        self.epochs = _integer("epochs", epochs, low=1)
        self.seed = _integer("seed", seed)
        self.signals = declared_signals(signals, method, objective)
        self._inputs = checked_inputs(method, inputs, self.num_samples)
        # InfoBatch scores by the most recent loss, SCAN's warm-up sums it: an EMA with rate 1.
        self._alpha = 1.0 if self.spec.latest_loss else self.params["alpha"]
        k = math.ceil((1 - exact_fraction(self.pruning_rate)) * self.num_samples)
        self.budget: int | None = None if self.spec.own_rate else k  # their rate follows from their params
        self._table = SampleTable.empty(self.num_samples)
        self._state = self._fresh_state()
        self._epoch = -1
        self._kept: Tensor | None = None
        self._upweight: Tensor | None = None
        self._weight_cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}
        self._pending: list[BufferedStep] = []
        self._epoch_seen = torch.zeros(self.num_samples, dtype=torch.bool)
        self._visits = 0
        self._steps = 0
        self._visits_per_epoch: list[int] = []
        self._history: dict[int, np.ndarray] = {}  # epoch -> packed kept mask (N/8 bytes)
        # A static method selects once, before training, from the empty table and its inputs.
        self._static = self._select(0) if self.spec.static else None

    def _fresh_state(self) -> MethodState | None:
        factory = self.spec.state
        return None if factory is None else factory(self.num_samples, self.params, self.seed)

    @property
    def method_state(self) -> MethodState | None:
        """The method's state between epochs (``MethodSpec.state``; None for a stateless method)."""
        return self._state

    @property
    def selection_info(self) -> dict[str, float]:
        """What a static rule reported about its set (``Selection.info``, e.g. SemDeDup's implied ε)."""
        return dict(self._static.info) if self._static is not None else {}

    @property
    def table(self) -> SampleTable:
        """The per-sample state (single-process: with every update flushed into it)."""
        self._settle("table", strict=False)
        return self._table

    @property
    def required_signal(self) -> str | None:
        """The signal besides the loss that this method's score needs (None: the loss alone)."""
        return required_signal(self.method, self.objective)

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
        self._settle("set_epoch")
        if self._state is not None:  # e.g. SCAN: the warm-up test on the epoch just finished, a cycle's reset
            self._state.begin_epoch(self._table, self._epoch, epoch)
        selection = self._static if self._static is not None else self._select(epoch)
        self._install(epoch, selection.kept, selection.upweight)
        self._epoch_seen.zero_()
        self._visits_per_epoch.extend([0] * (epoch + 1 - len(self._visits_per_epoch)))

    def _select(self, epoch: int) -> Selection:
        ctx = SelectionContext(
            table=self._table,
            epoch=epoch,
            epochs=self.epochs,
            budget=self.budget if self.budget is not None else self.num_samples,
            params=self.params,
            seed=self.seed,
            generator=make_generator(self.seed, epoch, "select"),
            objective=self.objective,
            state=self._state,
            inputs=self._inputs,
        )
        return self.spec.rule(ctx)

    def _install(self, epoch: int, kept: Tensor, upweight: Tensor | None) -> None:
        self._epoch = epoch
        self._kept = kept
        self._upweight = upweight
        self._weight_cache = {}
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
        """Size of the current kept set (before any epoch: epoch 0's size; N for a dynamic method that sets its own rate)."""
        if self._kept is not None:
            return self._kept.numel()
        if self._static is not None:
            return self._static.kept.numel()
        return self.budget if self.budget is not None else self.num_samples

    def sampler(self, rank: int | None = None, world_size: int | None = None) -> PrunedSampler:
        """A DataLoader sampler that always serves the epoch last passed to ``set_epoch``."""
        return PrunedSampler(self, rank=rank, world_size=world_size)

    # ------------------------------------------------------------------ per-step update
    def _observing(self) -> bool:
        """Whether the method's state takes this epoch's rows (SCAN: a probe epoch, which marks)."""
        return self._state is not None and self._epoch >= 0 and self._state.observes(self._epoch)

    def update(
        self, idx: Tensor, loss: Tensor, align: Tensor | None = None, entropy: Tensor | None = None,
        **signals: Tensor | None,
    ) -> Tensor:
        """Buffer a batch's per-sample statistics; returns loss weights shaped like ``loss``.

        No host synchronisation: the tensors are kept by reference (do not modify them in place)
        until ``flush()`` validates them and folds them into the table. Weights are 1 except
        InfoBatch's kept low-loss samples (1 / (1 − p)), computed on ``loss``'s device. Each
        sample updates the table at most once per epoch: later repeats in the same epoch
        (DistributedSampler padding) are ignored for the table and for visits.

        The signals come by name (``align`` and ``entropy`` also positionally, the original
        signature); None is "not given". With declared ``signals`` exactly those must come.
        ``loss_12`` / ``loss_21``: the two directions' per-sample losses (view 1 → 2, 2 → 1), which
        only SCAN reads (other methods ignore them). Without them (a one-direction objective such
        as the supervised one) SCAN reads ``loss`` for both directions.
        """
        if self._epoch < 0:
            raise ConfigError("no epoch selected yet: call set_epoch(epoch) before update()")
        given = {name: t for name, t in {"align": align, "entropy": entropy, **signals}.items() if t is not None}
        check_given(given, self.signals, self.method, self.objective)
        reads = set(self._table.signals) | set(self.spec.reads)
        check_batch_metadata(idx, loss, {name: t for name, t in given.items() if name in reads})
        buffered = {"loss": detach_for_buffer(loss)}
        buffered |= {name: detach_for_buffer(t) for name, t in given.items() if name in self._table.signals}
        # The untracked signals the method reads are buffered only in the epochs its state observes
        # (SCAN: the probes, the only ones that mark): no memory for them otherwise. Not given, the
        # loss stands in for them (a one-direction objective: SCAN's two directions coincide).
        if self._observing():
            buffered |= {name: detach_for_buffer(given.get(name, loss)) for name in self.spec.reads}
        self._pending.append(BufferedStep(detach_for_buffer(idx), buffered))
        self._steps += 1
        return self._weights(idx, loss)

    def _weights(self, idx: Tensor, loss: Tensor) -> Tensor:
        if self._upweight is None:
            return torch.ones_like(loss)
        key = (loss.device, loss.dtype)
        table = self._weight_cache.get(key)
        if table is None:  # once per epoch and device: the upweight mask as loss weights
            host = torch.ones(self.num_samples, dtype=loss.dtype)
            host[self._upweight] = 1.0 / (1.0 - self.params["infobatch_prune_prob"])
            if loss.device.type == "cuda":
                host = host.pin_memory()  # a pageable copy would synchronise the stream
            table = self._weight_cache[key] = host.to(loss.device, non_blocking=True)
        # Clamped so a bad index cannot trip a device-side assert; flush() reports it.
        pos = idx.to(loss.device, non_blocking=True).clamp(0, self.num_samples - 1)
        return table[pos]

    def flush(self) -> None:
        """Validate the buffered updates, all-gather them under torch.distributed, apply them.

        Observations are applied step-major then rank-major, the order of a per-step all-gather,
        so the table equals the one immediate per-step updates give. Under torch.distributed
        this is a collective: every rank calls it (the trainer, at the end of each epoch).
        """
        rank, world = world_info()
        if not self._pending and world == 1:
            return
        names = self._table.signals
        idx, signals, given, sizes = collect_on_host(self._pending, names)
        validate_buffer(idx, signals, given, self.num_samples)
        observing = self._observing()  # the same on every rank (same state): the same columns gathered
        reads = self.spec.reads if observing else ()
        extra: list[Tensor] = []
        if observing:  # the untracked signals the method reads, and each row's step and rank (its batch)
            extra = [*collect_untracked(self._pending, reads, idx),
                     torch.repeat_interleave(torch.arange(sizes.numel()), sizes).to(torch.float64),
                     torch.full((idx.numel(),), float(rank), dtype=torch.float64)]
        if world > 1:
            rows = all_gather_epoch(sizes, torch.stack([idx.to(torch.float64), *signals.values(), *extra], dim=1))
            idx = rows[:, 0].to(torch.int64)
            signals = {name: rows[:, i + 1].contiguous() for i, name in enumerate(names)}
            extra = [rows[:, 1 + len(names) + i].contiguous() for i in range(len(extra))]
        self._pending = []
        if observing:
            assert self._state is not None
            *untracked, step, row_rank = extra
            step = step.to(torch.int64)
            # Rows come step-major then rank (the all-gather's order): one batch per (step, rank).
            self._state.observe(EpochRows(idx, {**signals, **dict(zip(reads, untracked, strict=True))}, step,
                                          step * world + row_rank.to(torch.int64), self._epoch))
        self._observe(idx, signals)

    def _settle(self, what: str, strict: bool = True) -> None:
        """Flush single-process; under torch.distributed (a collective) refuse or skip."""
        if not self._pending:
            return
        if world_info()[1] == 1:
            self.flush()
        elif strict:
            raise ConfigError(
                f"{what}(): {len(self._pending)} update(s) not flushed under torch.distributed; "
                "call pruner.flush() on every rank first (e.g. at the end of each epoch)"
            )

    def _observe(self, idx: Tensor, signals: dict[str, Tensor]) -> None:
        if idx.numel() == 0:
            return
        # First occurrence of each index in the epoch's stream, vectorised (no Python loop).
        uniq, inverse = torch.unique(idx, return_inverse=True)
        positions = torch.arange(idx.numel())
        first = torch.full((uniq.numel(),), idx.numel(), dtype=torch.int64)
        first.scatter_reduce_(0, inverse, positions, reduce="amin")
        fresh = ~self._epoch_seen[uniq]
        rows, samples = first[fresh], uniq[fresh]
        picked = {name: values[rows] for name, values in signals.items()}
        self._table.observe(samples, picked, self._epoch, self._alpha, self.params["gamma"])
        self._epoch_seen[samples] = True
        self._visits += samples.numel()
        self._visits_per_epoch[self._epoch] += samples.numel()

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict[str, Any]:
        """Budget accounting (docs/method.md): visits, steps and achieved pruning rates.

        Under torch.distributed, visits count the updates flushed so far (steps are always current).
        """
        self._settle("stats", strict=False)
        done = self._epoch + 1
        n = self.num_samples
        return {
            "method": self.method,
            "objective": self.objective,
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
        self._settle("memory")
        t = self._table
        return memory_strength(t.align, t.last_epoch, t.count, self._epoch + 1, self.params["rho"])

    def epoch_diagnostics(self) -> dict[str, Any]:
        """LFL diagnostics and signal repeatability for the current epoch (after its updates)."""
        memory = self.memory()
        epoch_visits = self._visits_per_epoch[self._epoch] if self._epoch >= 0 else 0
        out = {
            "epoch": self._epoch,
            "keep_fraction": epoch_visits / self.num_samples,
            "cumulative_visits": self._visits,
            **table_diagnostics(self._table, self._kept, memory),
        }
        if self._state is not None:  # e.g. where SCAN is in its schedule, how many candidates it holds
            out |= self._state.diagnostics()
        return out

    def export_table(self, path: str | os.PathLike[str], labels: Sequence[Any] | None = None) -> None:
        """Write the table as CSV (index,count,<each signal's EMA: loss,align,entropy>,memory,last_epoch[,label])
        atomically (``diagnostics.write_table_csv``)."""
        write_table_csv(self._table, self.memory(), path, labels)

    # ------------------------------------------------------------------ checkpointing
    def _config(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "method": self.method,
            "pruning_rate": self.pruning_rate,
            "epochs": self.epochs,
            "seed": self.seed,
            "objective": self.objective,
            "params": dict(self.params),
        }

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors/ints/floats/strs (loads with ``torch.load(weights_only=True)``)."""
        self._settle("state_dict")
        empty_long = torch.zeros(0, dtype=torch.int64)
        method_state = {} if self._state is None else {METHOD_STATE: self._state.state_dict()}
        return {
            "version": _STATE_VERSION if self._state is None else _METHOD_STATE_VERSION,
            "config": self._config(),
            "table": self._table.state_dict(),
            "epoch": self._epoch,
            "kept": empty_long if self._kept is None else self._kept.clone(),
            "has_upweight": int(self._upweight is not None),
            "upweight": (torch.zeros(0, dtype=torch.bool) if self._upweight is None else self._upweight.clone()),
            "epoch_seen": self._epoch_seen.clone(),
            "sample_visits": self._visits,
            "optimizer_steps": self._steps,
            "visits_per_epoch": list(self._visits_per_epoch),
            **method_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` saved by a pruner with the same configuration (version 1 to 4).

        Anything buffered by ``update()`` and not yet flushed is discarded.
        """
        version = state.get("version") if isinstance(state, dict) else None
        if version not in _VERSIONS:
            got = version if isinstance(state, dict) else type(state).__name__
            raise ConfigError(f"not a DynamicPruner state_dict of version {', '.join(map(str, _VERSIONS))}: got {got!r}")
        # Version 1 predates the supervised objective: its runs were contrastive.
        saved = {"objective": "contrastive", **state["config"]}
        for key, value in self._config().items():
            if saved.get(key) != value:
                raise ConfigError(f"state_dict was saved with {key}={saved.get(key)!r}, this pruner has {value!r}")
        method_state = self._fresh_state()
        if method_state is not None:  # before anything changes: a state without it leaves the pruner as it was
            method_state.load_state_dict(state.get(METHOD_STATE if version == _METHOD_STATE_VERSION else self.method))
        self._table.load_state_dict(state["table"], version)
        self._state = method_state
        self._pending = []
        self._epoch_seen = state["epoch_seen"].to(torch.bool).clone()
        self._visits = int(state["sample_visits"])
        self._steps = int(state["optimizer_steps"])
        self._visits_per_epoch = [int(v) for v in state["visits_per_epoch"]]
        self._history = {}
        self._epoch, self._kept, self._upweight = -1, None, None
        if int(state["epoch"]) >= 0:
            upweight = state["upweight"].to(torch.bool).clone() if state["has_upweight"] else None
            self._install(int(state["epoch"]), state["kept"].to(torch.int64).clone(), upweight)
