"""One record per pruning method (``MethodSpec``) and the interfaces its parts see.

A method is its selection rule (a pure function of a ``SelectionContext``), its parameters with
their valid ranges (``Param``), the signals it needs, whether it sets its own rate, whether it
selects once (static) or every epoch (dynamic) and, for a stateful method, the class of the state
it carries between epochs (``MethodState``). ``ssl_emp.pruning.registry`` holds the records and
derives every list of names from them; ``DynamicPruner`` reads nothing but the record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from ssl_emp.pruning.state import SampleTable

#: What the per-sample signals come from: SSL (loss, align) or classification (loss, entropy).
OBJECTIVES: tuple[str, ...] = ("contrastive", "supervised")


@dataclass(frozen=True)
class Param:
    """One keyword parameter: its default and its valid range (predicate + text)."""

    default: float
    check: Callable[[float], bool]
    text: str  # the valid range in words, for error messages
    help: str


UNIT = (lambda x: 0 < x <= 1, "in (0, 1]")
NONNEG = (lambda x: x >= 0, ">= 0")
# The table's parameters: its EMAs and the memory diagnostics exist for every method, so every method
# takes them; a method that reads the latest loss (``latest_loss``) takes no alpha.
ALPHA = Param(0.5, *UNIT, "EMA rate of the loss")
GAMMA = Param(0.5, *UNIT, "EMA rate of align / entropy")
RHO = Param(0.9, *UNIT, "forgetting rate of the memory term (contrastive EMP)")


@dataclass(frozen=True)
class SelectionContext:
    """Everything a rule may look at."""

    table: SampleTable
    epoch: int
    epochs: int
    budget: int  # K = ceil((1 - r) N); N for a method that sets its own rate
    params: Mapping[str, float]
    seed: int
    generator: torch.Generator  # seeded from (seed, epoch)
    objective: str = "contrastive"
    state: Any = None  # the method's MethodState (the pruner's, read-only here); None if it has none
    inputs: Mapping[str, Tensor] = field(default_factory=dict)  # per-sample arrays (``MethodSpec.inputs``)


@dataclass(frozen=True)
class Selection:
    """An epoch's kept set (sorted int64) and the samples whose loss is up-weighted."""

    kept: Tensor
    upweight: Tensor | None = None  # bool mask over all samples (InfoBatch only)
    info: Mapping[str, float] = field(default_factory=dict)  # what a static rule reports of its set (SemDeDup's ε)


Rule = Callable[[SelectionContext], Selection]


@dataclass(frozen=True)
class EpochRows:
    """An epoch's flushed observations (all ranks', in stream order), as ``MethodState.observe`` sees them."""

    idx: Tensor  # int64 sample index of each row
    signals: Mapping[str, Tensor]  # float64: the table's signals and the untracked ones the method reads
    step: Tensor  # int64 step of each row (non-decreasing)
    batch: Tensor  # int64 batch of each row: one per (step, rank), contiguous
    epoch: int


class MethodState(Protocol):
    """What a stateful method carries between epochs beside the table; saved in the pruner's state."""

    def begin_epoch(self, table: SampleTable, finished: int, upcoming: int) -> None:
        """Between epochs, before ``upcoming`` is selected; ``finished`` is the epoch before (-1: none)."""

    def observes(self, epoch: int) -> bool:
        """Whether ``epoch``'s rows reach ``observe`` (and the untracked signals it reads are buffered)."""

    def observe(self, rows: EpochRows) -> None:
        """Take in a flush's rows; every rank sees the same rows, so every rank's state stays equal."""

    def diagnostics(self) -> dict[str, float | int]:
        """Numbers for the epoch's diagnostics record."""

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors / numbers (loads with ``torch.load(weights_only=True)``)."""

    def load_state_dict(self, state: object) -> None:
        """Restore ``state_dict``; a ConfigError naming the problem (and no change) when it is not one."""


#: (num_samples, resolved params, seed) -> the method's fresh state.
StateFactory = Callable[[int, Mapping[str, float], int], MethodState]


@dataclass(frozen=True)
class MethodSpec:
    """Everything the engine knows about one pruning method.

    ``params``: the method's own parameters, beyond the table's (``table_params``). ``needs``:
    objective -> the tracked signal its rule reads besides the loss. ``reads``: untracked signals it
    reads when the model gives them, all of them or none. ``inputs``: per-sample arrays the pruner is
    given (``DynamicPruner(inputs=...)``, first dimension N), e.g. embeddings for a curation method.
    ``static``: the rule runs once, when the pruner is built, and its set is every epoch's.
    """

    name: str
    rule: Rule
    description: str  # one line, with the paper
    params: Mapping[str, Param] = field(default_factory=dict)
    needs: Mapping[str, str] = field(default_factory=dict)
    reads: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    own_rate: bool = False  # its params set the achieved rate: pruning_rate is ignored, no budget K
    full_data: bool = False  # trains on every sample: the full-data reference, pruning_rate must be 0
    latest_loss: bool = False  # the table's loss is the latest observation (alpha fixed to 1, not a param)
    static: bool = False
    state: StateFactory | None = None

    @property
    def takes_rate(self) -> bool:
        """Whether a pruning rate sets its budget (the benchmark runs it at the grid's rates)."""
        return not (self.own_rate or self.full_data)

    def table_params(self) -> dict[str, Param]:
        """The table's parameters this method takes."""
        return {**({} if self.latest_loss else {"alpha": ALPHA}), "gamma": GAMMA, "rho": RHO}

    def all_params(self) -> dict[str, Param]:
        """Every parameter it takes: the table's, then its own."""
        return {**self.table_params(), **self.params}
