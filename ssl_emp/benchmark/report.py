"""Benchmark report: ``report.md`` and plots from ``DIR/results.json`` (partial sweeps included).

    python -m ssl_emp.benchmark.report DIR

Cells are (method, target rate); means and sample standard deviations are over the seeds
finished so far (one seed: the mean alone). InfoBatch has no target rate: it is its own cell.
This module assembles the report's sections; the numbers come from ``ssl_emp.benchmark.stats``,
the tables from ``ssl_emp.benchmark.tables``, the protocol check from ``ssl_emp.benchmark.protocol``,
the plots from ``ssl_emp.benchmark.plots``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssl_emp.benchmark.plots import write_plots
from ssl_emp.benchmark.protocol import protocol_check
from ssl_emp.benchmark.results import load_rows
from ssl_emp.benchmark.stats import (
    EQUAL_COMPUTE,
    METRIC_LABELS,
    ORACLE,
    REFERENCE,
    STATIC_REFERENCE,
    Cell,
    count_plot_rate,
    group_cells,
    pooled_counts,
    primary_metric,
    redundancy_design,
)
from ssl_emp.benchmark.tables import (
    count_table,
    curation_table,
    emp_vs_baselines,
    emp_vs_random,
    junk_table,
    metric_short_name,
    oracle_table,
    redundancy_table,
    repeatability_table,
    results_table,
    static_vs_random_table,
    versus_reference_table,
)
from ssl_emp.errors import ConfigError
from ssl_emp.run.files import atomic_write_text
from ssl_emp.run.layout import BenchmarkLayout

__all__ = ["Cell", "group_cells", "main", "render_markdown", "write_report"]


# ----------------------------------------------------------------------------- report.md


def _intro(rows: list[dict[str, Any]], plan: dict[str, Any] | None, key: str) -> list[str]:
    planned = plan.get("runs") if plan else None
    # Rows of runs outside the current plan (a grid since narrowed) still count as finished.
    total = f" of {len({p['run_id'] for p in planned} | {r['run_id'] for r in rows})}" if planned else ""
    out = ["# Benchmark report", ""]
    if plan:
        base = plan.get("base", {})
        data, model = base.get("data", {}), base.get("model", {})
        out += [f"Config `{plan.get('source', '?')}`: {base.get('algorithm')} on {data.get('dataset')} "
                f"(train subset {data.get('train_subset') or 'all'}, test subset {data.get('test_subset') or 'all'}), "
                f"{model.get('backbone')} {model.get('backbone_kwargs') or ''}, {base.get('epochs')} epochs, "
                f"batch {base.get('optim', {}).get('batch_size')}.", ""]
    primary = (f"**Primary metric: {METRIC_LABELS[key]}**" + (
        " (the trained classifier's test accuracy; kNN top-1 is a monitor)." if key == "test_top1" else "."))
    out += [f"{len(rows)}{total} runs finished. {primary} Mean ± sample std over the finished seeds (one seed: the "
            f"value alone). {metric_short_name(key)} / full: mean {METRIC_LABELS[key]} over full-data training's. Best "
            f"{METRIC_LABELS[key]} per target rate in **bold**. InfoBatch sets its own rate (`own`); its achieved "
            "rate is reported, never forced.", ""]
    return out


def _static_section(cells: list[Cell], key: str, label: str) -> list[str]:
    """Static rules against the random subset chosen once, when the grid has both."""
    table = static_vs_random_table(cells, key)
    if table is None:
        return []
    return [f"## Static rules vs {STATIC_REFERENCE}", "", f"A static rule keeps one set for every epoch. Per-seed "
            f"difference of {label} (method − {STATIC_REFERENCE} at the same rate, same seed), as above: does "
            f"choosing that one set by the rule's score beat choosing it at random? Compute includes a curation "
            f"method's embedding pass ({STATIC_REFERENCE}: the training visits alone).", "", table, ""]


def _diagnostics(cells: list[Cell], key: str, injected: float | None, folder: Path,
                 design: tuple[int, int] | None = None) -> list[str]:
    """The sections that read each run's selection diagnostics: repeatability, junk, redundancy, counts."""
    out = []
    table = repeatability_table(cells)
    if table:
        out += ["## Signal repeatability", "", "Spearman correlation between each sample's latest and previous "
                "observation of a signal at the last epoch, mean ± std over seeds: near 0 the score is noise on this "
                "data and ranking by it selects at random; near 1 it ranks samples the same way twice (reference: "
                "0.10 for SimCLR loss on the 4,000-image CPU protocol).", "", table, ""]
    table = junk_table(cells, key, injected)
    if table:
        share = "" if injected is None else f" ({100 * injected:.2f}% of the training images)"
        out += ["## Junk probe", "", f"Share of each epoch's kept set that is injected junk (pixel-shuffled copies), "
                f"mean over epochs. Random selection keeps the injected share{share}; a score that moves it away "
                "carries information about the samples: below it the rule avoids junk, above it the rule seeks "
                "junk out.", "", table, ""]
    table = redundancy_table(cells, key, design)
    if table:
        sizes = "" if design is None else (f" Here U = {design[0]} unique images make N = {design[1]} training "
                                           f"samples, so r* = 1 − U/N = {1 - design[0] / design[1]:.3g}.")
        out += ["## Redundancy probe", "", "Per epoch, the share of the kept set that repeats an image already in "
                "it ((kept − distinct) / kept) and the number of distinct unique images trained; means over epochs, "
                "then mean ± std over seeds. Full data trains the data set's own repeat share (N − U) / N; `dedup`, "
                "the oracle, trains every unique image once an epoch and no repeat. Random selection keeps repeats "
                "by chance alone: a rule that sees redundancy keeps fewer repeats and more distinct images than "
                f"{REFERENCE} at the same rate.{sizes}", "", table, ""]
        table = oracle_table(cells, key)
        if table:
            out += ["### Share of the oracle's gain", "", f"Each rule's gain over {REFERENCE} at r*, as a share of "
                    f"the gain of `{ORACLE}` (perfect knowledge of the redundancy) over the same seeds: 0 = no better "
                    "than random, 1 = as good as the oracle. Interval: Fieller's 95 % interval for a ratio of paired "
                    "means.", "", table, ""]
    table = curation_table(cells, key)
    if table:
        out += ["## Curation: where the embeddings came from and what they cost", "", "A curation method is "
                "listed once per embedding source (`METHOD@SOURCE`, grid.embeddings). Its compute is the run's "
                "training visits plus one forward pass per training image for the embeddings plus, for a pre-run "
                "source, the pre-run's visits (docs/method.md, \"Compute of a curation method\"); an encoder "
                "trained on other images is named (its visits) but not added. `semdedup` reaches its target rate by "
                "removing the images most similar to an earlier member of their cluster; the ε that implies is "
                "reported.", "", table, ""]
    rate = count_plot_rate(cells)
    series = pooled_counts(cells, folder, rate) if rate is not None else {}
    if series:
        out += [f"## Training counts at r = {rate:g}", "", "Per-sample times trained, seeds pooled (the plot's "
                "numbers). Low-Frequency Learning shows as many samples trained once or never.", "",
                count_table(series), ""]
    return out


def render_markdown(rows: list[dict[str, Any]], plan: dict[str, Any] | None = None,
                    plots: Sequence[str] | None = (), folder: Path | None = None) -> str:
    """The whole report.md as a string; ``plots``: file names to embed, None if none could be drawn;
    ``folder``: the sweep's folder, where rows without a count histogram find their run's table."""
    cells = group_cells(rows, plan.get("runs") if plan else None)
    key = primary_metric(rows)
    out = _intro(rows, plan, key)
    if not rows:
        out.append("No finished runs yet.")
        return "\n".join(out) + "\n"
    label = METRIC_LABELS[key]
    injected = ((plan or {}).get("base") or {}).get("data", {}).get("inject_noise")
    design = redundancy_design(((plan or {}).get("base") or {}).get("data"))
    out += ["## Can this protocol see?", "", protocol_check(cells, key), "",
            "## Results", "", results_table(cells, key), "",
            f"## Every method vs {REFERENCE} and {EQUAL_COMPUTE}", "", f"Per-seed difference of {label} (method − "
            f"reference, same seed) against the two ways to spend the same compute without selection: {REFERENCE} "
            f"(the same visits, a fresh random subset each epoch) and {EQUAL_COMPUTE} (full data for round((1 − r)·E) "
            "epochs, the schedule compressed). Mean ± sample std over the seeds both finished; 95 % confidence "
            "interval mean ± t(0.975, n − 1) · std/√n (Student t), in **bold** when it excludes 0. A method that sets "
            "its own rate is paired with the reference run nearest its achieved rate (within half an epoch).", "",
            versus_reference_table(cells, key), "",
            *_static_section(cells, key, label),
            f"## EMP vs {REFERENCE}", "", emp_vs_random(cells, key=key), "",
            "## EMP vs each baseline", "", f"Paired per-seed difference of {label} (pp), mean ± std over the "
            "seeds both finished; positive: EMP is better.", "", emp_vs_baselines(cells, key=key), ""]
    out += _diagnostics(cells, key, injected, folder or Path("."), design)
    if plots:
        out += ["## Plots", "", *(f"![{Path(p).stem}]({p})" for p in plots), ""]
    elif plots is None:
        out += ["Plots skipped: matplotlib is not installed (`pip install -e .[bench]`).", ""]
    machines = sorted({r.get("machine") or "?" for r in rows})
    versions = sorted({r.get("versions") or "?" for r in rows})
    out += ["## Environment", ""] + [f"- machine: {m}" for m in machines] + [f"- versions: {v}" for v in versions]
    out += ["", "Per-run numbers: `results.csv` / `results.json`; run folders: `runs/<run_id>/`.", ""]
    return "\n".join(out)


def write_report(out: str | Path) -> Path:
    """Regenerate ``out/report.md`` and the plots from ``out/results.json``."""
    out = Path(out)
    layout = BenchmarkLayout(out)
    if not layout.results.is_file() and not layout.plan.is_file():
        raise ConfigError(f"{out} holds no results.json (not a benchmark output folder)")
    rows = load_rows(out)
    plan_path = layout.plan
    plan = json.loads(plan_path.read_text()) if plan_path.is_file() else None
    plots = write_plots(group_cells(rows, plan.get("runs") if plan else None), out) if rows else []
    path = layout.report
    atomic_write_text(path, render_markdown(rows, plan, plots, out))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m ssl_emp.benchmark.report DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m ssl_emp.benchmark.report DIR", file=sys.stderr)
        return 2
    try:
        print(write_report(args[0]))
    except ConfigError as exc:
        print(f"ssl-emp report: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
