"""How each selection rule treats the junk of a junk-probe sweep (``data.inject_noise``), and why.

    python benchmarks/junk_probe.py RUNS_DIR [RUNS_DIR ...] [--out FILE.json]   (a benchmark's runs/ folder)

The report's "Junk probe" table gives the junk share of the kept set averaged over epochs. This
adds, per run, what explains it: the share at chosen epochs (``metrics.jsonl``: does a rule learn
to avoid or seek junk as training goes on?) and, from ``pruning_table.csv``, the visits and the
per-sample scores of junk against clean images (EMA loss, EMA view alignment, memory term). The
junk images are the ones ``ssl_emp.data.junk_indices`` picks for the run's ``data.inject_noise``
(fixed by seed 0), so nothing beyond the run folder is needed. The JSON keeps every per-run figure.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from ssl_emp.benchmark.results import analyse_run_folders, parse_run_id
from ssl_emp.config import load_config
from ssl_emp.data.junk import junk_indices
from ssl_emp.run.layout import RunLayout

EPOCHS = (1, 10, 40, 80)  # 1-based epochs whose kept-set junk share the table shows (if the run has them)
COLUMNS = ("count", "loss", "align", "memory")


def junk_trajectory(metrics: Path) -> list[float]:
    """The kept set's junk share per epoch, in epoch order."""
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [r["pruning/junk_kept_fraction"] for r in records if "pruning/junk_kept_fraction" in r]


def junk_vs_clean(table: Path, fraction: float) -> dict[str, float]:
    """Mean of each ``COLUMNS`` value over junk and over clean images (NaN entries left out)."""
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    junk = set(junk_indices(len(rows), fraction).tolist())
    out = {}
    for col in COLUMNS:
        for name, keep in (("junk", True), ("clean", False)):
            values = [float(r[col]) for r in rows if (int(r["index"]) in junk) == keep]
            values = [v for v in values if not math.isnan(v)]
            out[f"{col}_{name}"] = statistics.fmean(values) if values else math.nan
    return out


def collect(runs_dir: Path) -> list[dict]:
    rows = []
    for run in map(RunLayout, sorted(p for p in runs_dir.iterdir() if RunLayout(p).summary.is_file())):
        fraction = load_config(run.config).data.inject_noise
        if not fraction or not run.pruning_table.is_file():
            continue
        summary = json.loads(run.summary.read_text())
        name, rate, seed = parse_run_id(run.dir.name)
        rows.append({"run_id": run.dir.name, "method": name, "rate": rate, "seed": seed,
                     "knn_top1": summary.get("knn_top1"), "injected": fraction,
                     "junk_kept_by_epoch": junk_trajectory(run.metrics),
                     **junk_vs_clean(run.pruning_table, fraction)})
    return rows


def _ms(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "—"
    m = statistics.fmean(values) * scale
    return f"{m:.{digits}f}" if len(values) < 2 else f"{m:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def table(rows: list[dict]) -> str:
    cells: dict[tuple[str, float | None], list[dict]] = defaultdict(list)
    for r in rows:
        cells[(r["method"], r["rate"])].append(r)
    epochs = [e for e in EPOCHS if any(len(r["junk_kept_by_epoch"]) >= e for r in rows)]
    lines = ["| method | r | runs | " + "".join(f"junk in kept set, epoch {e} (%) | " for e in epochs)
             + "visits per image, junk / clean | EMA loss, junk / clean | EMA alignment, junk / clean |",
             "| --- | ---: | ---: |" + " ---: |" * (len(epochs) + 3)]
    for (method, rate), rs in sorted(cells.items(), key=lambda kv: (kv[0][1] or 0.0, kv[0][0])):
        shares = [_ms([r["junk_kept_by_epoch"][e - 1] for r in rs if len(r["junk_kept_by_epoch"]) >= e], 100) for e in epochs]
        pair = [f"{_ms([r[f'{c}_junk'] for r in rs], 1, 2)} / {_ms([r[f'{c}_clean'] for r in rs], 1, 2)}" for c in COLUMNS[:3]]
        lines.append(f"| {method} | {'—' if rate is None else rate} | {len(rs)} | " + "".join(f"{s} | " for s in shares)
                     + " | ".join(pair) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return analyse_run_folders(argv, __doc__.splitlines()[0], collect, table, "finished junk-probe run (data.inject_noise > 0)")


if __name__ == "__main__":
    raise SystemExit(main())
