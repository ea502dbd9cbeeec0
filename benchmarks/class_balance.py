"""Class balance of what each method trained on: visits per class from the run folders' pruning tables.

    python benchmarks/class_balance.py RUNS_DIR [RUNS_DIR ...] [--out FILE.json]   (a benchmark's runs/ folder)

A selection rule that prefers hard (or easy) images can also prefer some classes; that alone can
cost accuracy, whatever the score says about single images. For every run this sums the per-image
training visits (`count` column of `pruning_table.csv`) by label and compares each class's share
of visits with its share of images: total variation distance TV = ½ Σ_c |visits_c − images_c|
(0: the class mix of the data; random selection gives ≈ 0) and the most and least trained class
(visit share / image share). The JSON holds the per-run visit and image counts per class, so
every figure the table shows can be recomputed from the committed file.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path

from ssl_emp.benchmark.results import analyse_run_folders, parse_run_id
from ssl_emp.run.layout import RunLayout


def class_counts(table: Path) -> tuple[dict[int, int], dict[int, int]]:
    """(visits per label, images per label) from one run's pruning_table.csv."""
    visits: dict[int, int] = defaultdict(int)
    images: dict[int, int] = defaultdict(int)
    with table.open(newline="") as f:
        for row in csv.DictReader(f):
            label = int(row["label"])
            visits[label] += int(row["count"])
            images[label] += 1
    return dict(visits), dict(images)


def balance(visits: dict[int, int], images: dict[int, int]) -> dict[str, float]:
    """TV distance between the class mix of visits and of images, and the extreme per-class ratios."""
    n_visits, n_images = sum(visits.values()), sum(images.values())
    ratios = {c: (visits.get(c, 0) / n_visits) / (images[c] / n_images) for c in images}
    tv = 0.5 * sum(abs(visits.get(c, 0) / n_visits - images[c] / n_images) for c in images)
    return {"tv": tv, "max_ratio": max(ratios.values()), "min_ratio": min(ratios.values())}


def collect(runs_dir: Path) -> list[dict]:
    rows = []
    for run in map(RunLayout, sorted(p for p in runs_dir.iterdir() if RunLayout(p).pruning_table.is_file())):
        summary = json.loads(run.summary.read_text()) if run.summary.is_file() else {}
        if not summary:
            continue  # unfinished run
        name, rate, seed = parse_run_id(run.dir.name)
        visits, images = class_counts(run.pruning_table)
        metric = summary.get("test_top1") if summary.get("test_top1") is not None else summary.get("knn_top1")
        rows.append({"run_id": run.dir.name, "method": name, "rate": rate, "seed": seed,
                     "top1": metric, "visits": visits, "images": images, **balance(visits, images)})
    return rows


def table(rows: list[dict]) -> str:
    cells: dict[tuple[str, float | None], list[dict]] = defaultdict(list)
    for r in rows:
        cells[(r["method"], r["rate"])].append(r)
    lines = ["| method | r | runs | TV of visits vs images (%) | most trained class (× share) | least trained class (× share) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]

    def ms(values: list[float], scale: float = 1.0) -> str:
        m = statistics.fmean(values) * scale
        return f"{m:.2f}" if len(values) < 2 else f"{m:.2f} ± {statistics.stdev(values) * scale:.2f}"

    for (method, rate), rs in sorted(cells.items(), key=lambda kv: (kv[0][1] or 0.0, kv[0][0])):
        lines.append(f"| {method} | {'—' if rate is None else rate} | {len(rs)} | {ms([r['tv'] for r in rs], 100)} "
                     f"| {ms([r['max_ratio'] for r in rs])} | {ms([r['min_ratio'] for r in rs])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return analyse_run_folders(argv, __doc__.splitlines()[0], collect, table, "finished run with a pruning_table.csv")


if __name__ == "__main__":
    raise SystemExit(main())
