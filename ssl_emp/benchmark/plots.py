"""The benchmark report's plots (matplotlib, the `bench` extra): accuracy and wall time against the
achieved pruning rate, per-sample training counts at one rate. Tables: ``ssl_emp.benchmark.tables``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ssl_emp.benchmark.stats import (
    EQUAL_COMPUTE,
    METRIC_LABELS,
    Cell,
    count_plot_rate,
    count_stats,
    method_order,
    pooled_counts,
    primary_metric,
)
from ssl_emp.pruning import FULL_DATA
from ssl_emp.run.files import atomic_write_bytes

ACC_PLOT = "accuracy_vs_rate.png"
COMPUTE_PLOT = "accuracy_vs_compute.png"
COUNT_PLOT = "train_counts_r{rate:g}.png"
WALL_PLOT = "wall_time_vs_rate.png"


def _colors(cells: list[Cell]) -> dict[str, Any]:
    """One colour per method present, known methods in ``METHODS`` order first, so a method keeps
    its colour across the plots of one report."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    methods = sorted({c.method for c in cells}, key=method_order)
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def _rate_series(ax: Any, xs: list[float], ys: list[float], xe: list[float], ye: list[float],
                 color: Any, label: str | None) -> None:
    """One method's points against the achieved rate with their seed spread, joined when several."""
    ax.errorbar(xs, ys, xerr=xe, yerr=ye, marker="o", ms=4, capsize=3, color=color, label=label,
                ls="-" if len(xs) > 1 else "none")


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
    """Top-1 vs achieved pruning rate per method, one panel per metric present, the primary metric's
    first; full data as a line."""
    import matplotlib.pyplot as plt

    primary = primary_metric([r for c in cells for r in c.rows])
    keys = [k for k in dict.fromkeys((primary, *METRIC_LABELS)) if any(c.stat(k) for c in cells)]
    if not keys:
        return False
    colors = _colors(cells)
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.5), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for method in dict.fromkeys(c.method for c in cells):
            xs, ys, xe, ye = _series(cells, method, key)
            if not xs:
                continue
            ys100, ye100 = [100 * y for y in ys], [100 * e for e in ye]
            if method == FULL_DATA:
                ax.axhline(ys100[0], color=colors.get(method), ls="--", lw=1, label=f"{FULL_DATA} ({ys100[0]:.1f}%)")
                ax.axhspan(ys100[0] - ye100[0], ys100[0] + ye100[0], color=colors.get(method), alpha=0.1, lw=0)
            _rate_series(ax, xs, ys100, xe, ye100, colors.get(method), None if method == FULL_DATA else method)
        ax.set_xlabel("achieved pruning rate")
        ax.set_ylabel(f"{METRIC_LABELS[key]} (%)")
        if key == primary and len(keys) > 1:
            ax.set_title("primary metric", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("accuracy vs pruning rate (mean ± std over seeds)")
    _save(fig, path)
    plt.close(fig)
    return True


def plot_compute(cells: list[Cell], path: Path) -> bool:
    """The primary metric against achieved sample-visits and against wall time, one marker per
    (method, rate) with its seed spread; `shorter` and full data joined as the equal-compute frontier.
    A marker above the line buys accuracy that fewer full-data epochs cannot; below it costs some.
    A curation method's compute includes its embedding pass and any pre-run (``COMPUTE_OF``)."""
    import matplotlib.pyplot as plt

    key = primary_metric([r for c in cells for r in c.rows])
    points = [(c, x, y, w) for c in cells if (x := c.stat("compute_visits")) and (y := c.stat(key))
              and (w := c.stat("compute_time_s"))]
    if not points:
        return False
    colors = _colors(cells)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), squeeze=False)
    for ax, (axis, label) in zip(axes[0], ((1, "sample-visits (achieved; + pre-run visits and embedding passes)"),
                                                  (3, "wall time (s; + pre-run and embedding pass)")),
                                 strict=True):
        frontier = sorted((p for p in points if p[0].method in (FULL_DATA, EQUAL_COMPUTE)), key=lambda p: p[axis][0])
        if len(frontier) > 1:
            ax.plot([p[axis][0] for p in frontier], [100 * p[2][0] for p in frontier], color="black", lw=1,
                    label=f"frontier: full data, fewer epochs ({EQUAL_COMPUTE} + full)", zorder=1)
        seen: set[str] = set()
        for c, *stats in points:
            xs, ys = stats[axis - 1], stats[1]
            ax.errorbar(xs[0], 100 * ys[0], xerr=xs[1], yerr=100 * ys[1], marker="s" if c.method in
                        (FULL_DATA, EQUAL_COMPUTE) else "o", ms=5, capsize=3, color=colors.get(c.method), ls="none",
                        label=None if c.method in seen else c.method, zorder=2)
            seen.add(c.method)
        ax.set_xlabel(label)
        ax.set_ylabel(f"{METRIC_LABELS[key]} (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{METRIC_LABELS[key]} against compute (mean ± std over seeds)")
    _save(fig, path)
    plt.close(fig)
    return True


def plot_counts(cells: list[Cell], out: Path, rate: float, path: Path) -> bool:
    """Distribution of per-sample training counts per method at one rate, all finished seeds
    pooled: the Low-Frequency-Learning picture (how many samples are trained only once or never)."""
    import matplotlib.pyplot as plt

    colors = _colors(cells)
    series = pooled_counts(cells, out, rate)
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
    colors = _colors(cells)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    full = next((c.stat("wall_time_s") for c in cells if c.method == FULL_DATA), None)
    if full:
        ax.plot([0, 1], [full[0], 0], color="gray", ls=":", lw=1, label="(1 − r) × full wall time")
    for method in dict.fromkeys(c.method for c in cells):
        xs, ys, xe, ye = _series(cells, method, "wall_time_s")
        if xs:
            _rate_series(ax, xs, ys, xe, ye, colors.get(method), method)
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
    if plot_compute(cells, out / COMPUTE_PLOT):
        made.append(COMPUTE_PLOT)
    rate = count_plot_rate(cells)
    if rate is not None and plot_counts(cells, out, rate, out / COUNT_PLOT.format(rate=rate)):
        made.append(COUNT_PLOT.format(rate=rate))
    if plot_wall_time(cells, out / WALL_PLOT):
        made.append(WALL_PLOT)
    return made
