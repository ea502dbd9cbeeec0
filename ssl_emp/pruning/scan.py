"""SCAN: dynamic data pruning for contrastive pre-training (Guo & Kankanhalli, arXiv 2411.09126).

Definition in docs/method.md ("The rules", SCAN), read from the official code (github.com/guoyang9/SCAN,
``moco-scan/scan_module.py`` and ``main_moco.py``, commit 2b6d725):

- warm-up: all data until an epoch's summed loss improves on the previous epoch's by less than a
  fraction τ, ``(L_prev − L_cur) / L_prev < τ``; the cycles start with the next epoch, w;
- cycles of T + 1 epochs. The first (the probe, all data) marks, batch by batch and in each
  direction of the contrastive loss (view 1 → 2 and 2 → 1), the ⌊ρ_max·B⌋ highest-loss samples
  ("ill-matched") and the ⌊ρ_min·B⌋ lowest ("redundant"). Per kind, the samples marked in both
  directions are candidates; when they are fewer than 0.9× the first direction's marks, random
  members of the two directions' union top them up to that many. Candidates (redundant ∪
  ill-matched) accumulate over the epoch;
- cycle epoch j = 1 … T leaves out a uniformly random ⌊ρ_j·|C|⌋ of the candidates C,
  ρ_j = ½(1 + cos(π (T − j) / T)) (0.25, 0.75, 1 for T = 3). No loss rescaling; the achieved rate
  follows (≈ 0.35 after warm-up with the defaults, at most 0.5) and is reported, never forced.

Where the engine differs from the official code, and why:

- Marks are made when ``DynamicPruner.flush()`` hands the probe's rows to ``ScanState.observe``
  (once per epoch, after the all-gather) from the buffered per-step batches, not inside each training step: the official code reads the marks back
  to the host every step (``.cpu().numpy()``), which the engine never does in a step. The grouping
  is the official one: in-batch fractions over each rank's local batch, then intersection and
  top-up per step over the marks of all ranks (the official code all-gathers the marked indices
  of each step before intersecting).
- Top-ups draw from a priority permutation seeded by (seed, epoch, "scan", kind), identical on
  every rank and in a resumed run, instead of Python's global ``random.sample`` on each rank
  (which also refuses the ``set`` it is given from Python 3.11 on).
- ⌊ρ·B⌋ = 0 marks nothing; the official ``sorted_ls[-int(len * rho_min):]`` marks the whole batch
  as redundant when ``int(len * rho_min)`` is 0. Floors are taken of the decimal the user typed
  (⌊0.35·B⌋ exactly), like every budget of the engine.
- The warm-up loss is the sum of the symmetrised per-sample loss over the epoch's samples on all
  ranks. The official code sums each step's ``loss1.mean() + loss2.mean()`` on each rank's own
  batches (no all-reduce), so ranks may disagree on the trigger epoch; the ratio it tests is the
  same up to the weight of a short last batch. The first epoch has no predecessor and never
  triggers (the official code compares it with a start value of 1e8, which it never beats for
  losses below 7·10⁷).
- The official loader drops the last short batch (``drop_last=True``); here it trains, and it is
  marked with the fractions of its own size.
- Only the official default ``prune_mode='both'`` (candidates = redundant ∪ ill-matched) and the
  ratio thresholds are implemented (no ``abs_max``/``abs_min``).
- A model with one loss direction (the supervised objective) passes no per-direction losses; its
  loss then stands for both directions, so the marks of the two directions coincide: the
  candidates are the in-batch ⌊ρ_max·B⌋ highest and ⌊ρ_min·B⌋ lowest losses, never topped up.

The official code also removes a fixed set for a whole epoch (it re-indexes the data set each
epoch), so per-epoch selection is not a difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor

from ssl_emp.errors import ConfigError
from ssl_emp.pruning.seeding import exact_fraction, make_generator
from ssl_emp.pruning.spec import EpochRows, MethodSpec, Param, Selection, SelectionContext
from ssl_emp.pruning.state import DIRECTIONS, SampleTable

WARMUP, PROBE, PRUNE = "warmup", "probe", "prune"
# The official code's guard against a zero previous loss: (L_prev − L_cur) / (L_prev + 1e-8).
_LOSS_EPS = 1e-8
# Top up when the two directions agree on fewer than 9/10 of the first direction's marks
# (the official ``len(set12) < 0.9 * len(set1)``, in integers).
_AGREE_NUM, _AGREE_DEN = 9, 10


def scan_phase(epoch: int, warmup_end: int, cycle: int) -> tuple[str, int]:
    """(phase, j) of ``epoch``: warm-up, the cycle's probe epoch (j = 0) or its pruning epoch j ∈ 1…T.

    ``warmup_end`` is the first epoch after the warm-up (-1 while it lasts); ``cycle`` is T.
    """
    if warmup_end < 0 or epoch < warmup_end:
        return WARMUP, 0
    j = (epoch - warmup_end) % (cycle + 1)
    return (PROBE, 0) if j == 0 else (PRUNE, j)


def removal_fraction(j: int, cycle: int) -> float:
    """ρ_j = ½(1 + cos(π (T − j) / T)): the share of the candidates left out in cycle epoch j."""
    return 0.5 * (1.0 + math.cos(math.pi * (cycle - j) / cycle))


def removal_count(j: int, cycle: int, candidates: int) -> int:
    """⌊ρ_j·|C|⌋ (the official ``int(len(set) * rho)``); the 1e-9 absorbs the cosine's rounding,
    so that e.g. ρ_j = 0.75 computed as 0.7499999… still removes 3 of 4."""
    return min(candidates, math.floor(removal_fraction(j, cycle) * candidates + 1e-9))


def warmup_over(previous: float, current: float, tau: float) -> bool:
    """The official trigger: the epoch's summed loss improved by less than τ (no previous: False)."""
    if math.isnan(previous):
        return False
    return (previous - current) / (previous + _LOSS_EPS) < tau


def _floor_share(share: Fraction, counts: Tensor) -> Tensor:
    """⌊share·B⌋ per batch, in integers (no float rounding)."""
    return counts * share.numerator // share.denominator


def _in_batch_extremes(loss: Tensor, group: Tensor, counts: Tensor, top: Tensor, bottom: Tensor) -> tuple[Tensor, Tensor]:
    """Row masks of each batch's ``top`` highest and ``bottom`` lowest losses (ties: earlier row higher)."""
    order = torch.sort(loss, descending=True, stable=True).indices
    order = order[torch.sort(group[order], stable=True).indices]  # batch-major, loss descending within
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel()) - starts[group[order]]
    return rank < top[group], rank >= (counts - bottom)[group]


def _agreed(step: Tensor, idx: Tensor, first: Tensor, second: Tensor, num_samples: int, priority: Tensor) -> Tensor:
    """Per step: samples marked in both directions, topped up from the union when too few agree.

    Sets per step over all of its rows (all ranks' batches, as the official all-gather): a sample
    repeated in a step (padding) is marked in a direction if any of its rows is. The top-up takes
    the lowest ``priority`` values among the union's other members: a uniform random subset.
    """
    key, inverse = torch.unique(step * num_samples + idx, return_inverse=True)  # sorted: step-major
    in1 = torch.zeros(key.numel(), dtype=torch.int64).index_add_(0, inverse, first.long()) > 0
    in2 = torch.zeros(key.numel(), dtype=torch.int64).index_add_(0, inverse, second.long()) > 0
    ustep, sample = key // num_samples, key % num_samples
    steps = int(step.max()) + 1
    n_first = torch.zeros(steps, dtype=torch.int64).index_add_(0, ustep, in1.long())
    n_both = torch.zeros(steps, dtype=torch.int64).index_add_(0, ustep, (in1 & in2).long())
    need = torch.where(_AGREE_DEN * n_both < _AGREE_NUM * n_first, n_first - n_both, 0)
    rest = (in1 ^ in2).nonzero().flatten()  # the union without the intersection
    rest = rest[torch.sort(priority[sample[rest]], stable=True).indices]
    rest = rest[torch.sort(ustep[rest], stable=True).indices]  # step-major, priority within
    n_rest = torch.zeros(steps, dtype=torch.int64).index_add_(0, ustep[rest], torch.ones_like(rest))
    rank = torch.arange(rest.numel()) - (torch.cumsum(n_rest, 0) - n_rest)[ustep[rest]]
    picked = rest[rank < need[ustep[rest]]]
    return torch.cat([sample[in1 & in2], sample[picked]])


def mark_candidates(
    idx: Tensor, loss_12: Tensor, loss_21: Tensor, step: Tensor, batch: Tensor, *,
    num_samples: int, rho_max: float, rho_min: float, seed: int, epoch: int,
) -> Tensor:
    """The sorted unique candidates of a probe epoch's batches (or a part of them, whole steps).

    Rows are the buffered samples in stream order: ``step`` numbers the steps (non-decreasing),
    ``batch`` the batches (contiguous, within a step: one per rank). Per batch and direction the
    ⌊ρ_max·B⌋ highest losses are ill-matched and the ⌊ρ_min·B⌋ lowest redundant; per step and kind,
    the samples marked in both directions (topped up, see the module docstring) are candidates.
    A pure function of the rows and (seed, epoch): every rank marks the same set.
    """
    if idx.numel() == 0:
        return idx.new_zeros(0)
    _, step = torch.unique_consecutive(step, return_inverse=True)  # 0, 1, … in stream order
    _, group, counts = torch.unique_consecutive(batch, return_inverse=True, return_counts=True)
    top = _floor_share(exact_fraction(rho_max), counts)
    bottom = _floor_share(exact_fraction(rho_min), counts)
    ill_12, red_12 = _in_batch_extremes(loss_12, group, counts, top, bottom)
    ill_21, red_21 = _in_batch_extremes(loss_21, group, counts, top, bottom)
    chosen = []
    for kind, first, second in (("ill", ill_12, ill_21), ("red", red_12, red_21)):
        priority = torch.randperm(num_samples, generator=make_generator(seed, epoch, "scan", kind))
        chosen.append(_agreed(step, idx, first, second, num_samples, priority))
    return torch.unique(torch.cat(chosen))


class ScanState:
    """What SCAN carries between epochs (a ``MethodState``); every field is in the pruner's ``state_dict``.

    ``prev_loss``: the last warm-up epoch's summed loss (NaN before the first); ``warmup_end``: the
    first epoch after the warm-up (-1 while it lasts); ``candidates``: bool mask over the samples,
    marked in the probe epoch ``candidates_epoch`` (-1: none yet).
    """

    def __init__(self, num_samples: int, params: Mapping[str, float], seed: int) -> None:
        self.num_samples, self.params, self.seed = num_samples, params, seed
        self.cycle = int(params["scan_cycle"])
        self.prev_loss = float("nan")
        self.warmup_end = -1
        self.candidates = torch.zeros(num_samples, dtype=torch.bool)
        self.candidates_epoch = -1

    def phase(self, epoch: int) -> tuple[str, int]:
        return scan_phase(epoch, self.warmup_end, self.cycle)

    def begin_epoch(self, table: SampleTable, finished: int, upcoming: int) -> None:
        """Test the warm-up criterion on the epoch just finished; clear the candidates when
        ``upcoming`` is a probe epoch.

        The finished epoch's loss is read from the table (for SCAN its ``loss`` column is the latest
        observation, and ``last_epoch`` says who was trained), so it is the same however often the
        epoch was flushed, and on every rank.
        """
        if self.warmup_end < 0 and finished >= 0:
            current = float(table.loss[table.last_epoch == finished].sum())
            if warmup_over(self.prev_loss, current, self.params["scan_tau"]):
                self.warmup_end = finished + 1
            else:
                self.prev_loss = current
        if self.phase(upcoming)[0] == PROBE:
            self.candidates.zero_()
            self.candidates_epoch = upcoming

    def observes(self, epoch: int) -> bool:
        """Only the probe epochs mark: their batches' per-direction losses are buffered."""
        return self.phase(epoch)[0] == PROBE

    def observe(self, rows: EpochRows) -> None:
        marked = mark_candidates(
            rows.idx, rows.signals[DIRECTIONS[0]], rows.signals[DIRECTIONS[1]], rows.step, rows.batch,
            num_samples=self.num_samples, rho_max=self.params["scan_rho_max"], rho_min=self.params["scan_rho_min"],
            seed=self.seed, epoch=rows.epoch)
        self.candidates[marked] = True

    def diagnostics(self) -> dict[str, float | int]:
        """Where SCAN is in its schedule, and how many candidates it holds."""
        return {"scan_warmup_end": self.warmup_end, "scan_candidates": int(self.candidates.sum())}

    def state_dict(self) -> dict[str, Any]:
        return {"prev_loss": self.prev_loss, "warmup_end": self.warmup_end,
                "candidates": self.candidates.clone(), "candidates_epoch": self.candidates_epoch}

    def load_state_dict(self, state: object) -> None:
        if not isinstance(state, dict) or not isinstance(state.get("candidates"), Tensor):
            raise ConfigError("state_dict has no SCAN state (a 'scan' entry with a candidates mask)")
        mask = state["candidates"]
        if mask.shape != self.candidates.shape:
            raise ConfigError(f"state_dict SCAN candidates must have shape {tuple(self.candidates.shape)}, "
                              f"got {tuple(mask.shape)}")
        self.prev_loss = float(state["prev_loss"])
        self.warmup_end = int(state["warmup_end"])
        self.candidates = mask.to("cpu", torch.bool).clone()
        self.candidates_epoch = int(state["candidates_epoch"])


def select_scan(ctx: SelectionContext) -> Selection:
    """All data in warm-up and probe epochs; cycle epoch j leaves out a uniformly random ⌊ρ_j·|C|⌋ of
    the probe's candidates C.

    The official code draws the left-out set with Python's global ``random.sample`` per epoch; here
    it comes from the context's generator, seeded by (seed, epoch), the same on every rank.
    """
    n = ctx.table.num_samples
    state: ScanState = ctx.state
    phase, j = state.phase(ctx.epoch)
    if phase != PRUNE or state.candidates_epoch != ctx.epoch - j:  # no probe of this cycle: keep all
        return Selection(torch.arange(n))
    candidates = state.candidates.nonzero().flatten()
    drop = removal_count(j, state.cycle, candidates.numel())
    left_out = candidates[torch.randperm(candidates.numel(), generator=ctx.generator)[:drop]]
    keep = torch.ones(n, dtype=torch.bool)
    keep[left_out] = False
    return Selection(keep.nonzero().flatten())


_SHARE = (lambda x: 0 <= x <= 0.5, "in [0, 0.5]")
SCAN = MethodSpec(
    "scan", select_scan, "leave out in-batch redundant and ill-matched samples in cosine-annealed "
    "cycles after a warm-up (Guo & Kankanhalli, arXiv 2411.09126)",
    params={
        "scan_rho_max": Param(0.35, *_SHARE, "SCAN: in-batch share marked ill-matched (highest loss)"),
        "scan_rho_min": Param(0.35, *_SHARE, "SCAN: in-batch share marked redundant (lowest loss)"),
        "scan_cycle": Param(3, lambda x: x >= 1 and x == int(x), "an integer >= 1",
                            "SCAN: T, pruning epochs per cycle (after one probe epoch)"),
        "scan_tau": Param(0.3, lambda x: 0 <= x < 1, "in [0, 1)",
                          "SCAN: warm-up ends when the epoch loss improves by less than this fraction"),
    },
    reads=DIRECTIONS, own_rate=True, latest_loss=True, state=ScanState)
