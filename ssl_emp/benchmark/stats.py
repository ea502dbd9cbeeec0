"""The numbers behind the benchmark report: result rows grouped into (method, rate) cells, the primary
metric, paired per-seed differences with their confidence intervals, pooled training counts.

Free of markdown and plotting, so the report's tables and plots (``ssl_emp.benchmark.tables``,
``ssl_emp.benchmark.plots``) share one definition of every figure.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_emp.benchmark.grid import DEDUP, SHORTER
from ssl_emp.benchmark.results import run_counts
from ssl_emp.benchmark.sources import split_method
from ssl_emp.config import redundant_size
from ssl_emp.pruning import FULL_DATA, METHODS, method_spec
from ssl_emp.pruning.methods import RANDOM_STATIC

HEADLINE_RATE = 0.7  # the rate the spec singles out (EMP's regime: r >= 0.7)
REFERENCE = "random-dynamic"  # every selection rule is compared with it, seed by seed
EQUAL_COMPUTE = SHORTER  # ... and with full data for (1 − r)·E epochs
STATIC_REFERENCE = RANDOM_STATIC.name  # ... and a static rule with a random subset chosen once
METRIC_LABELS = {"test_top1": "test top-1", "knn_top1": "kNN top-1", "linear_top1": "linear top-1"}
TOL = 1e-9  # rates and means closer than this are equal (they come from float arithmetic)
# The compute axis: a run's visits and wall time plus its curation's (docs/method.md, "Compute of a
# curation method"); a row written before rows carried them has the run's own.
COMPUTE_OF = {"compute_visits": "sample_visits", "compute_time_s": "wall_time_s"}


@dataclass
class Cell:
    """All finished runs of one (method, target rate), plus how many seeds were planned."""

    method: str
    target_rate: float | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    planned: int | None = None  # from DIR/benchmark.json, when present

    def values(self, key: str) -> list[float]:
        old = COMPUTE_OF.get(key)
        return [float(v) for r in self.rows if (v := r.get(key, r.get(old) if old else None)) is not None]

    def stat(self, key: str) -> tuple[float, float, int] | None:
        """(mean, sample std — 0 for one value, n) over the finished seeds, or None."""
        vals = self.values(key)
        if not vals:
            return None
        return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals)

    def by_seed(self, key: str) -> dict[int, float]:
        return {int(r["seed"]): float(r[key]) for r in self.rows if r.get(key) is not None}


def rate_label(rate: float | None) -> str:
    """A cell's target rate as tables print it: ``own`` for a method that sets its own (InfoBatch)."""
    return "own" if rate is None else f"{rate:g}"


def same_rate(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) < TOL)


def method_order(method: str) -> tuple[int, str]:
    """Known methods in ``METHODS`` order, then any other (an ablation, a new rule) by name."""
    return (METHODS.index(method), "") if method in METHODS else (len(METHODS), method)


def group_cells(rows: list[dict[str, Any]], plan: list[dict[str, Any]] | None = None) -> list[Cell]:
    """Rows (and planned runs without rows) grouped into cells: full first, then by target rate
    and method, InfoBatch (no target rate) last."""
    cells: list[Cell] = []

    def cell_for(method: str, rate: float | None) -> Cell:
        for c in cells:
            if c.method == method and same_rate(c.target_rate, rate):
                return c
        cells.append(Cell(method, rate))
        return cells[-1]

    for p in plan or []:
        c = cell_for(p["method"], p["target_rate"])
        c.planned = (c.planned or 0) + 1
    for row in rows:
        cell_for(row["method"], row.get("target_rate")).rows.append(row)

    def key(c: Cell) -> tuple[int, float, tuple[int, str]]:
        if c.method == FULL_DATA:
            return (0, 0.0, (0, ""))
        if c.target_rate is None:
            return (2, 0.0, method_order(c.method))
        return (1, c.target_rate, method_order(c.method))

    return sorted(cells, key=key)


def find_cell(cells: list[Cell], method: str, rate: float | None) -> Cell | None:
    return next((c for c in cells if c.method == method and same_rate(c.target_rate, rate)), None)


def primary_metric(rows: Sequence[dict[str, Any]]) -> str:
    """``test_top1`` when a finished run has it (a supervised sweep: kNN is then a monitor), else
    ``knn_top1``: the accuracy every headline table and plot ranks by."""
    return "test_top1" if any(r.get("test_top1") is not None for r in rows) else "knn_top1"


# ----------------------------------------------------------------------------- paired differences


def t_quantile(df: int, q: float = 0.975) -> float:
    """Student t quantile with ``df`` degrees of freedom (scipy ships with scikit-learn)."""
    from scipy.stats import t  # imported here: a report without seeds to pair never pays for scipy

    return float(t.ppf(q, df))


@dataclass(frozen=True)
class Paired:
    """Per-seed differences a − b (percentage points) over the seeds both finished."""

    diffs: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.diffs)

    @property
    def std(self) -> float | None:
        """Sample std over seeds; None for one seed."""
        return statistics.stdev(self.diffs) if self.n > 1 else None

    @property
    def se(self) -> float | None:
        """Standard error of the mean difference, std / sqrt(n)."""
        return None if self.std is None else self.std / math.sqrt(self.n)

    def ci95(self) -> tuple[float, float] | None:
        """mean ± t_{0.975, n−1} · SE; None for one seed."""
        if self.se is None:
            return None
        half = t_quantile(self.n - 1) * self.se
        return self.mean - half, self.mean + half


def paired(a: Cell, b: Cell, key: str) -> Paired | None:
    """``a − b`` of ``key`` (×100: points) seed by seed, or None when no seed has both."""
    sa, sb = a.by_seed(key), b.by_seed(key)
    seeds = sorted(set(sa) & set(sb))
    return Paired(tuple(100 * (sa[s] - sb[s]) for s in seeds)) if seeds else None


def versus_reference(cells: list[Cell], key: str, ref: str = REFERENCE) -> list[tuple[Cell, Paired]]:
    """Every fixed-rate method other than ``ref`` paired with ``ref`` at its rate, in cell order."""
    out = []
    for c in cells:
        if c.method in (ref, FULL_DATA) or c.target_rate is None:
            continue
        b = find_cell(cells, ref, c.target_rate)
        p = paired(c, b, key) if b is not None else None
        if p is not None:
            out.append((c, p))
    return out


def is_static_rule(method: str) -> bool:
    """A grid method whose registered rule selects once (``semdedup@disjoint`` included), other than the
    full-data reference and random-static itself."""
    base, _ = split_method(method)
    return base in METHODS and base not in (FULL_DATA, STATIC_REFERENCE) and method_spec(base).static


def versus_static(cells: list[Cell], key: str) -> list[tuple[Cell, Paired]]:
    """Every static rule at a fixed rate paired seed by seed with random-static at that rate: whether
    choosing the one kept set by its score beats choosing it at random."""
    return [(c, p) for c, p in versus_reference(cells, key, STATIC_REFERENCE) if is_static_rule(c.method)]


def epochs_of(c: Cell) -> int | None:
    """The grid's E for a cell (a `shorter` row's own epochs are fewer: its budget is 1 − r of E)."""
    epochs = [int(r["epochs"]) for r in c.rows if r.get("epochs")]
    return max(epochs) if epochs else None


def matched(cells: list[Cell], method: str, c: Cell) -> Cell | None:
    """``method``'s cell at the compute of ``c``: at its target rate, or, for a cell that sets its own
    rate (InfoBatch), the cell whose mean achieved rate is nearest to ``c``'s within half an epoch's
    worth of visits (1 / 2E): whole epochs are the finest step a `shorter` run can take."""
    if c.target_rate is not None:
        return find_cell(cells, method, c.target_rate)
    own, epochs = c.stat("achieved_rate"), epochs_of(c)
    if own is None or epochs is None:
        return None
    near = [(abs(s[0] - own[0]), o) for o in cells if o.method == method and o is not c and o.target_rate is not None
            and (s := o.stat("achieved_rate")) is not None]
    best = min(near, key=lambda t: t[0], default=None)
    return best[1] if best is not None and best[0] <= 0.5 / epochs + TOL else None


def versus(cells: list[Cell], key: str, ref: str) -> list[tuple[Cell, Cell, Paired]]:
    """Every cell other than full and ``ref`` paired seed by seed with ``ref`` at its compute
    (``matched``): (cell, the reference cell, cell − reference)."""
    out = []
    for c in cells:
        if c.method in (ref, FULL_DATA):
            continue
        b = matched(cells, ref, c)
        p = paired(c, b, key) if b is not None else None
        if b is not None and p is not None:
            out.append((c, b, p))
    return out


def dynamic_range(cells: list[Cell], key: str, ref: str = REFERENCE) -> tuple[float, float] | None:
    """(mean key of full − mean key of ``ref`` at the highest rate that has it, in points; that rate),
    or None until both exist: how far apart a protocol can put data-rich and data-poor training."""
    full = next((s for c in cells if c.method == FULL_DATA and (s := c.stat(key))), None)
    refs = [(c.target_rate, s) for c in cells if c.method == ref and c.target_rate is not None and (s := c.stat(key))]
    if full is None or not refs:
        return None
    rate, stat = max(refs, key=lambda t: t[0])
    return 100 * (full[0] - stat[0]), rate


ORACLE = DEDUP  # the redundancy probe's oracle: full data on the unique images, at r* = 1 − U/N


def ratio_interval(a: Sequence[float], b: Sequence[float], q: float = 0.975) -> tuple[float, float] | None:
    """Fieller's interval for mean(a) / mean(b) from paired samples: every θ with
    |mean(a − θ·b)| ≤ t · sd(a − θ·b) / √n. None for fewer than two pairs or when mean(b) is not
    clearly non-zero (the set is then unbounded: the ratio is not estimable)."""
    n = len(a)
    if n < 2 or len(b) != n:
        return None
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    saa, sbb = statistics.variance(a), statistics.variance(b)
    sab = statistics.covariance(a, b)
    t2 = t_quantile(n - 1, q) ** 2 / n
    lead, half, const = mb * mb - t2 * sbb, ma * mb - t2 * sab, ma * ma - t2 * saa
    if lead <= 0:
        return None
    root = math.sqrt(max(half * half - lead * const, 0.0))  # ≥ 0 when lead > 0: the estimate lies inside
    return (half - root) / lead, (half + root) / lead


@dataclass(frozen=True)
class OracleShare:
    """A rule's share of the oracle's gain over the reference at the oracle's compute, over the
    seeds all three finished: ``gain`` = rule − reference, ``oracle`` = oracle − reference (points),
    ``share`` = mean gain / mean oracle gain (None if the oracle gains nothing), Fieller's interval."""

    gain: Paired
    oracle: Paired
    share: float | None
    ci: tuple[float, float] | None


def oracle_shares(cells: list[Cell], key: str, ref: str = REFERENCE,
                  oracle: str = ORACLE) -> list[tuple[Cell, OracleShare]]:
    """Every method at the oracle's rate (other than full, ``ref`` and the oracle) with its share of
    the oracle's gain over ``ref``, seed by seed; empty without an oracle or a reference there."""
    top = next((c for c in cells if c.method == oracle and c.target_rate is not None), None)
    base = find_cell(cells, ref, top.target_rate) if top is not None else None
    if top is None or base is None:
        return []
    out = []
    for c in cells:
        if c.method in (ref, oracle, FULL_DATA) or not same_rate(c.target_rate, top.target_rate):
            continue
        sc, sr, so = c.by_seed(key), base.by_seed(key), top.by_seed(key)
        seeds = sorted(set(sc) & set(sr) & set(so))
        if not seeds:
            continue
        gain = Paired(tuple(100 * (sc[s] - sr[s]) for s in seeds))
        gap = Paired(tuple(100 * (so[s] - sr[s]) for s in seeds))
        share = gain.mean / gap.mean if abs(gap.mean) > TOL else None
        out.append((c, OracleShare(gain, gap, share, ratio_interval(gain.diffs, gap.diffs))))
    return out


def redundancy_design(data: dict[str, Any] | None) -> tuple[int, int] | None:
    """(U, N) of the redundant training set a benchmark's base ``data`` section (benchmark.json)
    describes, or None when it has none (or was written before the redundancy probe existed)."""
    r = (data or {}).get("redundancy") or {}
    if r.get("unique") is None:
        return None
    return r["unique"], redundant_size(r["unique"], r["dup_fraction"], r["copies"])


# ----------------------------------------------------------------------------- training counts


def count_stats(counts: Sequence[int]) -> dict[str, float]:
    """Mean, coefficient of variation, fraction never / once trained and the maximum of per-sample
    training counts: the Low-Frequency-Learning signature (docs/method.md, "Diagnostics, each epoch")."""
    mean = statistics.fmean(counts)
    return {"mean": mean, "cv": statistics.pstdev(counts) / mean if mean else math.nan,
            "never": counts.count(0) / len(counts), "once": counts.count(1) / len(counts), "max": max(counts)}


def pooled_counts(cells: list[Cell], out: Path, rate: float) -> dict[str, list[int]]:
    """Per-sample training counts per method at one rate, all finished seeds pooled."""
    series = {}
    for c in cells:
        if same_rate(c.target_rate, rate):
            counts = [n for row in c.rows for n in run_counts(row, out)]
            if counts:
                series[c.method] = counts
    return series


def count_plot_rate(cells: list[Cell]) -> float | None:
    """0.7 when the sweep has it, else the finished target rate closest to it."""
    rates = sorted({c.target_rate for c in cells if c.target_rate and c.rows})
    return min(rates, key=lambda r: abs(r - HEADLINE_RATE)) if rates else None
