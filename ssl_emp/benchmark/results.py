"""A benchmark folder's result files: ``results.json`` / ``results.csv`` rows and per-run training counts.

The one module that reads and writes them, shared by the sweep (``ssl_emp.benchmark.sweep``) and the
report (``ssl_emp.benchmark.report``), so that neither imports the other.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssl_emp.errors import ConfigError
from ssl_emp.run.files import atomic_write_text
from ssl_emp.run.layout import BenchmarkLayout
from ssl_emp.run.summary import DIAGNOSTIC_KEYS

# Per-run selection diagnostics are copied from summary.json as they are (ssl_emp.run.summary).
COLUMNS = ("run_id", "method", "target_rate", "achieved_rate", "seed", "knn_top1", "linear_top1", "test_top1",
           "wall_time_s", "train_time_s", "optimizer_steps", "sample_visits", "epochs", "num_samples", "versions",
           "machine", "embed_source", "compute_visits", "compute_time_s", *DIAGNOSTIC_KEYS)
# The kind of each field a row may hold: a hand-edited or foreign results.json is refused in one line
# by every reader instead of crashing deep inside the report or a merge. Any other field is an extra.
TEXT_FIELDS = ("run_id", "method", "versions", "machine", "device", "dataset", "algorithm", "embed_source")
# A curation method's cost beside its run's (ssl_emp.benchmark.sources.curation_fields), and its implied ε.
CURATION_FIELDS = ("embed_forward_passes", "embed_time_s", "prerun_visits", "prerun_time_s", "encoder_visits",
                   "semdedup_eps")
NUMBER_FIELDS = (*(c for c in COLUMNS if c not in TEXT_FIELDS), "knn_top5", "knn_top1_epoch0", "linear_top5",
                 "linear_time_s", "eval_time_s", "pruner_time_s", *CURATION_FIELDS)
# What the row of a finished run holds, whatever version wrote it (null where a run has no such figure).
FINISHED_FIELDS = ("run_id", "method", "target_rate", "achieved_rate", "seed", "knn_top1")


def load_rows(out: str | Path) -> list[dict[str, Any]]:
    """The rows of ``DIR/results.json`` (empty when the sweep has not finished a run yet)."""
    path = BenchmarkLayout(out).results
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(rows, list):
        raise ConfigError(f"{path} must hold a list of result rows")
    for i, row in enumerate(rows):
        problem = row_problem(row)
        if problem:
            raise ConfigError(f"{path}: row {i} ({_shorten(row)}) {problem}")
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def row_problem(row: Any, required: tuple[str, ...] = ("run_id", "method")) -> str | None:
    """What is wrong with a result row, or None: a field in ``required`` missing, or a field of the
    wrong kind (a text metric, a run id that is not a name). Every reader keys rows by run_id and
    groups them by method, so those two are always required."""
    if not isinstance(row, dict):
        return "is not a mapping"
    missing = [key for key in required if key not in row]
    if missing:
        return f"has no {', '.join(missing)}"
    for key in ("run_id", "method"):
        if not isinstance(row[key], str) or not row[key]:
            return f"has {key} {_shorten(row[key])}, not a name"
    for key in NUMBER_FIELDS:
        if row.get(key) is not None and not _is_number(row[key]):
            return f"has {key} {_shorten(row[key])}, not a number"
    for key in TEXT_FIELDS:
        if row.get(key) is not None and not isinstance(row[key], str):
            return f"has {key} {_shorten(row[key])}, not text"
    if row.get("seed") is not None and not isinstance(row["seed"], int):
        return f"has seed {_shorten(row['seed'])}, not an integer"
    hist = row.get("count_histogram")
    if hist is not None and not (isinstance(hist, list) and all(isinstance(n, int) and n >= 0 for n in hist)):
        return "has a count_histogram that is not a list of counts"
    return None


def _shorten(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def csv_text(rows: list[dict[str, Any]]) -> str:
    """results.csv as it follows from the rows: the ``COLUMNS``, empty where a row has none."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS} for row in rows)
    return buf.getvalue()


def write_results(out: Path, rows: list[dict[str, Any]]) -> None:
    """``results.json`` (all fields) and ``results.csv`` (``COLUMNS``), each replaced atomically
    where it differs from the rows: so a results.csv that a kill left missing or stale (it is written
    second) is rebuilt by the next call, and an unchanged file keeps its mtime."""
    layout = BenchmarkLayout(out)
    for path, text in ((layout.results, json.dumps(rows, indent=2)), (layout.results_csv, csv_text(rows))):
        if not path.is_file() or path.read_bytes() != text.encode():
            atomic_write_text(path, text)


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
    hist = row.get("count_histogram") or count_histogram(BenchmarkLayout(out).run(row["run_id"]).pruning_table)
    return [c for c, n in enumerate(hist) for _ in range(n)]


def parse_run_id(run_id: str) -> tuple[str, float | None, int]:
    """(method, target rate or None, seed) of a run folder name, the inverse of
    ``ssl_emp.benchmark.grid.run_id``: ``emp_r0.7_s2`` -> ("emp", 0.7, 2), ``full_s0`` -> ("full", None, 0)."""
    head, _, seed = run_id.rpartition("_s")
    method, _, rate = head.partition("_r")
    return method, float(rate) if rate else None, int(seed)


def analyse_run_folders(argv: list[str] | None, description: str, collect: Callable[[Path], list[dict[str, Any]]],
                        table: Callable[[list[dict[str, Any]]], str], wanted: str) -> int:
    """The command line of the per-run analyses under ``benchmarks/``: ``collect`` rows from one or
    more benchmarks' ``runs/`` folders (seeds may be split across sweeps), write them with ``--out``
    (JSON, so every printed figure can be recomputed) and print ``table(rows)``; ``wanted`` names
    the runs ``collect`` keeps, for the error when there are none."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("runs_dirs", type=Path, nargs="+", help="runs/ folders of one or more benchmarks")
    parser.add_argument("--out", type=Path, help="write the per-run figures here (JSON)")
    args = parser.parse_args(argv)
    rows = []
    for folder in args.runs_dirs:
        if not folder.is_dir():
            parser.error(f"not a folder: {folder}")
        rows += collect(folder)
    if not rows:
        parser.error(f"no {wanted} under {', '.join(map(str, args.runs_dirs))}")
    if args.out:
        atomic_write_text(args.out, json.dumps(rows, indent=1) + "\n")
    print(table(rows))
    return 0
