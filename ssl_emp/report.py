"""Benchmark report: ``report.md`` and plots from ``DIR/results.json`` (partial sweeps included).

    python -m ssl_emp.report DIR

Cells are (method, target rate); means and sample standard deviations are over the seeds
finished so far (one seed: the mean alone). InfoBatch has no target rate: it is its own cell.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_emp.errors import ConfigError
from ssl_emp.pruning import METHODS
from ssl_emp.results import atomic_write, load_rows, run_counts

ACC_PLOT = "accuracy_vs_rate.png"
COUNT_PLOT = "train_counts_r{rate:g}.png"
WALL_PLOT = "wall_time_vs_rate.png"
HEADLINE_RATE = 0.7  # the rate the spec singles out (EMP's regime: r >= 0.7)
_TOL = 1e-9


@dataclass
class Cell:
    """All finished runs of one (method, target rate), plus how many seeds were planned."""

    method: str
    target_rate: float | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    planned: int | None = None  # from DIR/benchmark.json, when present

    def values(self, key: str) -> list[float]:
        return [float(r[key]) for r in self.rows if r.get(key) is not None]

    def stat(self, key: str) -> tuple[float, float, int] | None:
        """(mean, sample std — 0 for one value, n) over the finished seeds, or None."""
        vals = self.values(key)
        if not vals:
            return None
        return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals)

    def by_seed(self, key: str) -> dict[int, float]:
        return {int(r["seed"]): float(r[key]) for r in self.rows if r.get(key) is not None}


def _same_rate(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) < _TOL)


def _method_order(method: str) -> int:
    return METHODS.index(method) if method in METHODS else len(METHODS)


def group_cells(rows: list[dict[str, Any]], plan: list[dict[str, Any]] | None = None) -> list[Cell]:
    """Rows (and planned runs without rows) grouped into cells: full first, then by target rate
    and method, InfoBatch (no target rate) last."""
    cells: list[Cell] = []

    def cell_for(method: str, rate: float | None) -> Cell:
        for c in cells:
            if c.method == method and _same_rate(c.target_rate, rate):
                return c
        cells.append(Cell(method, rate))
        return cells[-1]

    for p in plan or []:
        c = cell_for(p["method"], p["target_rate"])
        c.planned = (c.planned or 0) + 1
    for row in rows:
        cell_for(row["method"], row.get("target_rate")).rows.append(row)

    def key(c: Cell) -> tuple[int, float, int]:
        if c.method == "full":
            return (0, 0.0, 0)
        if c.target_rate is None:
            return (2, 0.0, _method_order(c.method))
        return (1, c.target_rate, _method_order(c.method))

    return sorted(cells, key=key)


# ----------------------------------------------------------------------------- markdown


def _fmt(stat: tuple[float, float, int] | None, scale: float = 1.0, digits: int = 2) -> str:
    if stat is None:
        return "—"
    mean, std, n = stat
    text = f"{scale * mean:.{digits}f}"
    return text if n < 2 else f"{text} ± {scale * std:.{digits}f}"


def _rate(rate: float | None) -> str:
    return "own" if rate is None else f"{rate:g}"


def _best_knn(cells: list[Cell]) -> set[int]:
    """ids of the cells with the best mean kNN top-1 at their target rate (groups of >= 2 cells)."""
    best: set[int] = set()
    for rate in {c.target_rate for c in cells if c.target_rate is not None}:
        means = {id(c): s[0] for c in cells if _same_rate(c.target_rate, rate) and (s := c.stat("knn_top1"))}
        if len(means) >= 2:
            top = max(means.values())
            best |= {key for key, mean in means.items() if mean >= top - _TOL}
    return best


def results_table(cells: list[Cell]) -> str:
    """The main table: mean ± std over seeds per (method, rate), best kNN per rate in bold."""
    full = next((c.stat("knn_top1") for c in cells if c.method == "full"), None)
    best = _best_knn(cells)
    lines = [
        "| method | target r | achieved r | kNN top-1 (%) | linear top-1 (%) | kNN / full | wall time (s) | "
        "optimizer steps | seeds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cells:
        knn = c.stat("knn_top1")
        knn_text = _fmt(knn, 100)
        if id(c) in best:
            knn_text = f"**{knn_text}**"
        ratio = f"{knn[0] / full[0]:.3f}" if knn and full and full[0] > 0 else "—"
        seeds = f"{len(c.rows)}/{c.planned}" if c.planned and c.planned >= len(c.rows) else str(len(c.rows))
        lines.append(
            f"| {c.method} | {_rate(c.target_rate)} | {_fmt(c.stat('achieved_rate'), 1, 3)} | {knn_text} | "
            f"{_fmt(c.stat('linear_top1'), 100)} | {ratio} | {_fmt(c.stat('wall_time_s'), 1, 0)} | "
            f"{_fmt(c.stat('optimizer_steps'), 1, 0)} | {seeds} |"
        )
    return "\n".join(lines)


def _paired(a: Cell, b: Cell, key: str) -> str:
    """Mean ± std of the per-seed differences a − b over the seeds both finished."""
    sa, sb = a.by_seed(key), b.by_seed(key)
    diffs = [100 * (sa[s] - sb[s]) for s in sorted(set(sa) & set(sb))]
    if not diffs:
        return "—"
    std = f" ± {statistics.stdev(diffs):.2f}" if len(diffs) > 1 else ""
    return f"{statistics.fmean(diffs):+.2f}{std} (n={len(diffs)})"


def _delta(a: Cell, b: Cell, key: str) -> str:
    sa, sb = a.stat(key), b.stat(key)
    return "—" if sa is None or sb is None else f"{100 * (sa[0] - sb[0]):+.2f}"


def emp_vs_random(cells: list[Cell], ours: str = "emp", ref: str = "random-dynamic") -> str:
    """EMP minus random-dynamic at every shared rate: both means, the difference of means and the
    paired per-seed difference (percentage points); the headline rate first in prose."""
    pairs = []
    for a in cells:
        if a.method != ours or a.target_rate is None:
            continue
        b = next((c for c in cells if c.method == ref and _same_rate(c.target_rate, a.target_rate)), None)
        if b is not None and (a.rows or b.rows):
            pairs.append((a, b))
    if not pairs:
        return f"No rate has both {ours} and {ref} results yet."
    out = []
    head = next(((a, b) for a, b in pairs if _same_rate(a.target_rate, HEADLINE_RATE)), None)
    if head is not None:
        a, b = head
        out.append(f"At r = {HEADLINE_RATE:g}: {ours} kNN top-1 {_fmt(a.stat('knn_top1'), 100)}% "
                   f"({len(a.rows)} seeds) vs {ref} {_fmt(b.stat('knn_top1'), 100)}% ({len(b.rows)} seeds): "
                   f"difference {_delta(a, b, 'knn_top1')} pp (paired over seeds: {_paired(a, b, 'knn_top1')}).")
        out.append("")
    out += [
        f"| target r | {ours} kNN (%) | {ref} kNN (%) | Δ kNN (pp) | paired Δ kNN (pp) | "
        f"{ours} linear (%) | {ref} linear (%) | Δ linear (pp) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for a, b in pairs:
        out.append(
            f"| {_rate(a.target_rate)} | {_fmt(a.stat('knn_top1'), 100)} | {_fmt(b.stat('knn_top1'), 100)} | "
            f"{_delta(a, b, 'knn_top1')} | {_paired(a, b, 'knn_top1')} | {_fmt(a.stat('linear_top1'), 100)} | "
            f"{_fmt(b.stat('linear_top1'), 100)} | {_delta(a, b, 'linear_top1')} |"
        )
    return "\n".join(out)


def emp_vs_baselines(cells: list[Cell], ours: str = "emp") -> str:
    """EMP minus every fixed-rate baseline at every rate: paired per-seed Δ kNN top-1 (pp), so the
    report answers "does EMP beat X at rate r" for each X, not only for random-dynamic."""
    rates = sorted({c.target_rate for c in cells if c.method == ours and c.target_rate is not None and c.rows})
    refs = [m for m in dict.fromkeys(c.method for c in cells)
            if m not in (ours, "full") and any(c.method == m and c.target_rate is not None for c in cells)]
    if not rates or not refs:
        return f"No rate has both {ours} and a baseline yet."
    out = ["| target r | " + " | ".join(f"{ours} − {m}" for m in refs) + " |",
           "| ---: |" + " ---: |" * len(refs)]
    for rate in rates:
        a = next(c for c in cells if c.method == ours and _same_rate(c.target_rate, rate))
        row = []
        for m in refs:
            b = next((c for c in cells if c.method == m and _same_rate(c.target_rate, rate)), None)
            row.append(_paired(a, b, "knn_top1") if b is not None else "—")
        out.append(f"| {_rate(rate)} | " + " | ".join(row) + " |")
    return "\n".join(out)


def count_stats(counts: Sequence[int]) -> dict[str, float]:
    """Mean, coefficient of variation, fraction never / once trained and the maximum of per-sample
    training counts: the Low-Frequency-Learning signature (EMP_SSL.md, "Diagnostics")."""
    mean = statistics.fmean(counts)
    return {"mean": mean, "cv": statistics.pstdev(counts) / mean if mean else math.nan,
            "never": counts.count(0) / len(counts), "once": counts.count(1) / len(counts), "max": max(counts)}


def _pooled_counts(cells: list[Cell], out: Path, rate: float) -> dict[str, list[int]]:
    """Per-sample training counts per method at one rate, all finished seeds pooled."""
    series = {}
    for c in cells:
        if _same_rate(c.target_rate, rate):
            counts = [n for row in c.rows for n in run_counts(row, out)]
            if counts:
                series[c.method] = counts
    return series


def count_table(series: dict[str, list[int]]) -> str:
    """The numbers behind the count plot, one row per method (``_pooled_counts`` at one rate)."""
    lines = ["| method | mean count | CV of count | never trained (%) | trained once (%) | max count |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for method, counts in series.items():
        st = count_stats(counts)
        lines.append(f"| {method} | {st['mean']:.2f} | {st['cv']:.2f} | {100 * st['never']:.1f} | "
                     f"{100 * st['once']:.1f} | {st['max']} |")
    return "\n".join(lines)


def render_markdown(rows: list[dict[str, Any]], plan: dict[str, Any] | None = None,
                    plots: Sequence[str] | None = (), folder: Path | None = None) -> str:
    """The whole report.md as a string; ``plots``: file names to embed, None if none could be drawn;
    ``folder``: the sweep's folder, where rows without a count histogram find their run's table."""
    planned = plan.get("runs") if plan else None
    cells = group_cells(rows, planned)
    # Rows of runs outside the current plan (a grid since narrowed) still count as finished.
    total = f" of {len({p['run_id'] for p in planned} | {r['run_id'] for r in rows})}" if planned else ""
    out = ["# Benchmark report", ""]
    if plan:
        base = plan.get("base", {})
        data, model = base.get("data", {}), base.get("model", {})
        out.append(f"Config `{plan.get('source', '?')}`: {base.get('algorithm')} on {data.get('dataset')} "
                   f"(train subset {data.get('train_subset') or 'all'}, test subset {data.get('test_subset') or 'all'}), "
                   f"{model.get('backbone')} {model.get('backbone_kwargs') or ''}, {base.get('epochs')} epochs, "
                   f"batch {base.get('optim', {}).get('batch_size')}.")
        out.append("")
    out.append(f"{len(rows)}{total} runs finished. Mean ± sample std over the finished seeds (one seed: the value "
               "alone). kNN / full: mean kNN top-1 over full-data training's. Best kNN top-1 per target rate in "
               "**bold**. InfoBatch sets its own rate (`own`); its achieved rate is reported, never forced.")
    out.append("")
    if not rows:
        out.append("No finished runs yet.")
        return "\n".join(out) + "\n"
    out += ["## Results", "", results_table(cells), "", "## EMP vs random-dynamic", "", emp_vs_random(cells), "",
            "## EMP vs each baseline", "", "Paired per-seed difference of kNN top-1 (pp), mean ± std over the "
            "seeds both finished; positive: EMP is better.", "", emp_vs_baselines(cells), ""]
    rate = count_plot_rate(cells)
    series = _pooled_counts(cells, folder or Path("."), rate) if rate is not None else {}
    if series:
        out += [f"## Training counts at r = {rate:g}", "", "Per-sample times trained, seeds pooled (the plot's "
                "numbers). Low-Frequency Learning shows as many samples trained once or never.", "",
                count_table(series), ""]
    if plots:
        out += ["## Plots", "", *(f"![{Path(p).stem}]({p})" for p in plots), ""]
    elif plots is None:
        out += ["Plots skipped: matplotlib is not installed (`pip install -e .[bench]`).", ""]
    machines = sorted({r.get("machine") or "?" for r in rows})
    versions = sorted({r.get("versions") or "?" for r in rows})
    out += ["## Environment", ""] + [f"- machine: {m}" for m in machines] + [f"- versions: {v}" for v in versions]
    out += ["", "Per-run numbers: `results.csv` / `results.json`; run folders: `runs/<run_id>/`.", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- plots


def _colors() -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i) for i, m in enumerate(METHODS)}


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    os.replace(tmp, path)


def _series(cells: list[Cell], method: str, key: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """x = mean achieved rate, y = mean of key, with their stds, for one method's cells."""
    xs, ys, xe, ye = [], [], [], []
    for c in cells:
        x, y = c.stat("achieved_rate"), c.stat(key)
        if c.method == method and x and y:
            xs.append(x[0])
            xe.append(x[1])
            ys.append(y[0])
            ye.append(y[1])
    return xs, ys, xe, ye


def plot_accuracy(cells: list[Cell], path: Path) -> bool:
    """kNN (and linear, when present) top-1 vs achieved pruning rate per method; full as a line."""
    import matplotlib.pyplot as plt

    keys = [k for k in ("knn_top1", "linear_top1") if any(c.stat(k) for c in cells)]
    if not keys:
        return False
    colors = _colors()
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.5), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for method in dict.fromkeys(c.method for c in cells):
            xs, ys, xe, ye = _series(cells, method, key)
            if not xs:
                continue
            ys100, ye100 = [100 * y for y in ys], [100 * e for e in ye]
            if method == "full":
                ax.axhline(ys100[0], color=colors.get(method), ls="--", lw=1, label=f"full ({ys100[0]:.1f}%)")
                ax.axhspan(ys100[0] - ye100[0], ys100[0] + ye100[0], color=colors.get(method), alpha=0.1, lw=0)
            ax.errorbar(xs, ys100, xerr=xe, yerr=ye100, marker="o", ms=4, capsize=3, color=colors.get(method),
                        label=None if method == "full" else method, ls="-" if len(xs) > 1 else "none")
        ax.set_xlabel("achieved pruning rate")
        ax.set_ylabel(f"{'kNN' if key == 'knn_top1' else 'linear'} top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("accuracy vs pruning rate (mean ± std over seeds)")
    _save(fig, path)
    plt.close(fig)
    return True


def count_plot_rate(cells: list[Cell]) -> float | None:
    """0.7 when the sweep has it, else the finished target rate closest to it."""
    rates = sorted({c.target_rate for c in cells if c.target_rate and c.rows})
    return min(rates, key=lambda r: abs(r - HEADLINE_RATE)) if rates else None


def plot_counts(cells: list[Cell], out: Path, rate: float, path: Path) -> bool:
    """Distribution of per-sample training counts per method at one rate, all finished seeds
    pooled: the Low-Frequency-Learning picture (how many samples are trained only once or never)."""
    import matplotlib.pyplot as plt

    colors = _colors()
    series = _pooled_counts(cells, out, rate)
    if not series:
        return False
    top = max(max(v) for v in series.values())
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / len(series)
    for i, (method, counts) in enumerate(series.items()):
        hist = [0] * (top + 1)
        for n in counts:
            hist[n] += 1
        st = count_stats(counts)
        label = f"{method} (CV {st['cv']:.2f}, never trained {100 * st['never']:.1f}%)"
        frac = [h / len(counts) for h in hist]
        if top <= 30:  # few epochs: side-by-side bars per count
            ax.bar([k - 0.4 + width * (i + 0.5) for k in range(top + 1)], frac, width=width,
                   color=colors.get(method), label=label)
        else:  # long runs: bars would be slivers; outlines overlap readably
            ax.step(range(top + 1), frac, where="mid", color=colors.get(method), label=label)
    ax.set_xlabel("times trained (count)")
    ax.set_ylabel("fraction of samples")
    if top <= 30:
        ax.set_xticks(range(top + 1))
    ax.set_title(f"per-sample training counts at r = {rate:g} (seeds pooled)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return True


def plot_wall_time(cells: list[Cell], path: Path) -> bool:
    """Wall time vs achieved rate per method beside the ideal (1 − r) × full's mean wall time."""
    import matplotlib.pyplot as plt

    if not any(c.stat("wall_time_s") for c in cells):
        return False
    colors = _colors()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    full = next((c.stat("wall_time_s") for c in cells if c.method == "full"), None)
    if full:
        ax.plot([0, 1], [full[0], 0], color="gray", ls=":", lw=1, label="(1 − r) × full wall time")
    for method in dict.fromkeys(c.method for c in cells):
        xs, ys, xe, ye = _series(cells, method, "wall_time_s")
        if xs:
            ax.errorbar(xs, ys, xerr=xe, yerr=ye, marker="o", ms=4, capsize=3, color=colors.get(method),
                        label=method, ls="-" if len(xs) > 1 else "none")
    ax.set_xlabel("achieved pruning rate")
    ax.set_ylabel("pretraining wall time (s)")
    ax.set_xlim(-0.02, 1)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("wall time vs pruning rate (mean ± std over seeds)")
    _save(fig, path)
    plt.close(fig)
    return True


def write_plots(cells: list[Cell], out: Path) -> list[str] | None:
    """All plots that the finished runs allow; their file names (relative to ``out``), or None
    without matplotlib."""
    try:
        import matplotlib
    except ImportError:  # the `bench` extra is not installed: the tables still render
        return None
    matplotlib.use("Agg")
    made = []
    if plot_accuracy(cells, out / ACC_PLOT):
        made.append(ACC_PLOT)
    rate = count_plot_rate(cells)
    if rate is not None and plot_counts(cells, out, rate, out / COUNT_PLOT.format(rate=rate)):
        made.append(COUNT_PLOT.format(rate=rate))
    if plot_wall_time(cells, out / WALL_PLOT):
        made.append(WALL_PLOT)
    return made


def write_report(out: str | Path) -> Path:
    """Regenerate ``out/report.md`` and the plots from ``out/results.json``."""
    out = Path(out)
    if not (out / "results.json").is_file() and not (out / "benchmark.json").is_file():
        raise ConfigError(f"{out} holds no results.json (not a benchmark output folder)")
    rows = load_rows(out)
    plan_path = out / "benchmark.json"
    plan = json.loads(plan_path.read_text()) if plan_path.is_file() else None
    plots = write_plots(group_cells(rows, plan.get("runs") if plan else None), out) if rows else []
    path = out / "report.md"
    atomic_write(path, render_markdown(rows, plan, plots, out))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m ssl_emp.report DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m ssl_emp.report DIR", file=sys.stderr)
        return 2
    try:
        print(write_report(args[0]))
    except ConfigError as exc:
        print(f"ssl-emp report: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
