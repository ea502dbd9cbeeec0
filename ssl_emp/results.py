"""A benchmark folder's result files: ``results.json`` / ``results.csv`` rows and per-run training counts.

The one module that reads and writes them, shared by the sweep (``ssl_emp.benchmark``) and the
report (``ssl_emp.report``), so that neither imports the other.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ssl_emp.errors import ConfigError
from ssl_emp.fileio import atomic_write_text

# Per-run selection diagnostics copied from summary.json as they are (None when a run did not log
# them, and absent from rows written before they existed: readers use ``row.get``).
REPEATABILITY_KEYS = ("loss_repeatability", "align_repeatability", "entropy_repeatability")
DIAGNOSTIC_KEYS = (*REPEATABILITY_KEYS, "junk_kept_fraction")
COLUMNS = ("run_id", "method", "target_rate", "achieved_rate", "seed", "knn_top1", "linear_top1", "test_top1",
           "wall_time_s", "train_time_s", "optimizer_steps", "sample_visits", "epochs", "num_samples", "versions",
           "machine", *DIAGNOSTIC_KEYS)


def load_rows(out: str | Path) -> list[dict[str, Any]]:
    """The rows of ``DIR/results.json`` (empty when the sweep has not finished a run yet)."""
    path = Path(out) / "results.json"
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(rows, list):
        raise ConfigError(f"{path} must hold a list of result rows")
    return rows


def write_results(out: Path, rows: list[dict[str, Any]]) -> None:
    """``results.json`` (all fields) and ``results.csv`` (``COLUMNS``), each replaced atomically."""
    atomic_write_text(out / "results.json", json.dumps(rows, indent=2))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS} for row in rows)
    atomic_write_text(out / "results.csv", buf.getvalue())


def count_histogram(table: Path) -> list[int]:
    """``h[c]`` = number of samples trained ``c`` times, from a run's pruning_table.csv."""
    if not table.is_file():
        return []
    with open(table, newline="") as f:
        counts = [int(row["count"]) for row in csv.DictReader(f)]
    if not counts:
        return []
    hist = [0] * (max(counts) + 1)
    for c in counts:
        hist[c] += 1
    return hist


def run_counts(row: dict[str, Any], out: Path) -> list[int]:
    """Per-sample training counts of one result row: its ``count_histogram`` expanded, or, for rows
    written before the histogram travelled in the row, the run folder's pruning_table.csv."""
    hist = row.get("count_histogram") or count_histogram(out / "runs" / row["run_id"] / "pruning_table.csv")
    return [c for c, n in enumerate(hist) for _ in range(n)]
