"""Table of an EMP parameter study (``benchmarks/tune_emp.sh``, ``tune_emp_long.sh``): one row per setting.

    python benchmarks/summarize_tune_emp.py [DIR]     (DIR: benchmarks/results/tune_emp)

Each setting folder is a benchmark output; the reference is random-dynamic's row in the
``random-dynamic`` folder. Δ is paired by seed (same seed, same held-out split, same init), which
removes the seed-to-seed spread the settings share. Writes DIR/summary.md and prints it.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from ssl_emp.run.layout import BenchmarkLayout

REFERENCE = ("random-dynamic", "random-dynamic")  # (folder, method)


def _knn_by_seed(folder: Path, method: str) -> dict[int, float]:
    path = BenchmarkLayout(folder).results
    rows = json.loads(path.read_text()) if path.is_file() else []
    return {int(r["seed"]): 100 * float(r["knn_top1"]) for r in rows if r["method"] == method}


def _mean_std(values: list[float], sign: str = "") -> str:
    if not values:
        return "—"
    mean = f"{statistics.fmean(values):{sign}.2f}"
    return mean if len(values) == 1 else f"{mean} ± {statistics.stdev(values):.2f}"


def summarize(root: Path) -> str:
    ref = _knn_by_seed(root / REFERENCE[0], REFERENCE[1])
    settings = [(REFERENCE[0], REFERENCE[1])]
    # emp_* folders vary EMP's parameters; emp-easy (the reverse ranking) is its own method.
    settings += [(d.name, "emp-easy" if d.name == "emp-easy" else "emp") for d in sorted(root.iterdir())
                 if d.is_dir() and (d.name.startswith("emp_") or d.name == "emp-easy")]
    lines = [
        "| setting | seeds | validation kNN top-1 (%) | Δ vs random-dynamic, paired (pp) | per seed (%) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for folder, method in settings:
        knn = _knn_by_seed(root / folder, method)
        shared = sorted(set(knn) & set(ref))
        delta = _mean_std([knn[s] - ref[s] for s in shared], "+") if folder != REFERENCE[0] else ""
        per_seed = ", ".join(f"s{s}: {v:.2f}" for s, v in sorted(knn.items()))
        lines.append(f"| {folder} | {len(knn)} | {_mean_std(list(knn.values()))} | {delta} | {per_seed} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parent / "results" / "tune_emp"
    if not (root / REFERENCE[0]).is_dir():
        print(f"summarize_tune_emp: error: {root} holds no {REFERENCE[0]}/ folder (run tune_emp.sh first)",
              file=sys.stderr)
        return 2
    text = summarize(root)
    (root / "summary.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
