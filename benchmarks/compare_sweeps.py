"""A method of one sweep against a method of another, paired by seed at every shared rate.

    python benchmarks/compare_sweeps.py OURS_DIR:METHOD REF_DIR:METHOD [--label NAME] [--out FILE.md]

For a setting run as its own sweep on the same config and seeds as a main sweep (EMP with the
validation winner's β on the test protocol, say), next to random-dynamic or the default setting
of the main sweep. The figures are the report's (``ssl_emp.report_stats``): primary metric mean ±
std over seeds, per-seed difference ours − ref (points) with its 95 % Student-t interval.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
from pathlib import Path

from ssl_emp.report_stats import METRIC_LABELS, Cell, group_cells, paired, primary_metric, rate_label, same_rate
from ssl_emp.results import load_rows


def _side(text: str, parser: argparse.ArgumentParser) -> tuple[Path, str, list[Cell], str]:
    folder, sep, method = text.rpartition(":")
    if not sep or not folder or not method:
        parser.error(f"expected DIR:METHOD, got {text!r}")
    rows = [r for r in load_rows(folder) if r["method"] == method]
    if not rows:
        parser.error(f"{folder}/results.json has no finished run of {method!r}")
    return Path(folder), method, group_cells(rows), primary_metric(rows)


def _base(folder: Path) -> dict | None:
    plan = folder / "benchmark.json"
    return json.loads(plan.read_text()).get("base") if plan.is_file() else None


def _stat(c: Cell, key: str, seeds: list[int]) -> str:
    values = [100 * c.by_seed(key)[s] for s in seeds]
    mean = f"{statistics.fmean(values):.2f}"
    return mean if len(values) < 2 else f"{mean} ± {statistics.stdev(values):.2f}"


def compare(ours: list[Cell], ref: list[Cell], key: str, names: tuple[str, str]) -> str:
    lines = [f"| target r | seeds | {names[0]} {METRIC_LABELS[key]} (%) | {names[1]} {METRIC_LABELS[key]} (%) | "
             "Δ paired by seed (pp) | 95 % CI (pp) |", "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for a in ours:
        b = next((c for c in ref if same_rate(c.target_rate, a.target_rate)), None)
        p = paired(a, b, key) if b is not None else None
        if p is None:
            continue
        ci = p.ci95()
        delta = f"{p.mean:+.2f}" + ("" if p.std is None else f" ± {p.std:.2f}")
        interval = "—" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"
        if ci is not None and (ci[0] > 0 or ci[1] < 0):
            interval = f"**{interval}**"
        seeds = sorted(set(a.by_seed(key)) & set(b.by_seed(key)))
        lines.append(f"| {rate_label(a.target_rate)} | {', '.join(map(str, seeds))} | {_stat(a, key, seeds)} | "
                     f"{_stat(b, key, seeds)} | {delta} | {interval} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ours", help="DIR:METHOD, a benchmark output folder and a method in it")
    parser.add_argument("ref", help="DIR:METHOD of the reference")
    parser.add_argument("--label", help="name of OURS in the table (default: METHOD of DIR's folder name)")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    a_dir, a_method, a_cells, key = _side(args.ours, parser)
    b_dir, b_method, b_cells, b_key = _side(args.ref, parser)
    a_base, b_base = _base(a_dir), _base(b_dir)
    if a_base is not None and b_base is not None and a_base != b_base:
        parser.error(f"{a_dir} and {b_dir} ran different base configs (benchmark.json): seeds do not pair")
    if key != b_key:
        parser.error(f"the two sweeps rank by different metrics ({key} vs {b_key})")
    names = (args.label or f"{a_method} ({a_dir.name})", f"{b_method} ({b_dir.name})")
    table = compare(a_cells, b_cells, key, names)
    if table.count("\n") < 2:
        parser.error("no seed finished at the same rate in both")
    text = (f"{names[0]} vs {names[1]}, paired by seed: means ± std over the seeds both finished; "
            f"intervals in **bold** exclude 0.\n\n{table}\n\n"
            f"Command: `python benchmarks/compare_sweeps.py {args.ours} {args.ref}"
            + (f" --label {shlex.quote(args.label)}" if args.label else "") + "`\n")
    if args.out:
        args.out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
