"""A method of one sweep against a method of another, paired by seed at every shared rate.

    python benchmarks/compare_sweeps.py OURS_DIR:METHOD REF_DIR:METHOD [--label NAME] [--out FILE.md]
    python benchmarks/compare_sweeps.py OURS_DIR:'*' REF_DIR:'*' --across-configs [--out FILE.md]

For a setting run as its own sweep on the same config and seeds as a main sweep (EMP with the
validation winner's β on the test protocol, say), next to random-dynamic or the default setting
of the main sweep. The figures are the report's (``ssl_emp.benchmark.stats``): primary metric mean ±
std over seeds, per-seed difference ours − ref (points) with its 95 % Student-t interval.

``--across-configs`` pairs sweeps whose base configs differ (the junk probe against the clean
protocol): a seed then pairs the initialisation and the random streams, not the data; the keys that
differ head the output. ``*`` as METHOD on both sides compares every method both sweeps ran.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
from pathlib import Path

from ssl_emp.benchmark.results import load_rows
from ssl_emp.benchmark.stats import METRIC_LABELS, Cell, group_cells, paired, primary_metric, rate_label, same_rate
from ssl_emp.benchmark.sweep import NEUTRAL_KEYS
from ssl_emp.config import config_diff
from ssl_emp.run.layout import BenchmarkLayout


def _side(text: str, parser: argparse.ArgumentParser) -> tuple[Path, str, list[dict]]:
    folder, sep, method = text.rpartition(":")
    if not sep or not folder or not method:
        parser.error(f"expected DIR:METHOD, got {text!r}")
    rows = [r for r in load_rows(folder) if method in ("*", r["method"])]
    if not rows:
        parser.error(f"{folder}/results.json has no finished run of {method!r}")
    return Path(folder), method, rows


def _base(folder: Path) -> dict | None:
    plan = BenchmarkLayout(folder).plan
    return json.loads(plan.read_text()).get("base") if plan.is_file() else None


def _stat(c: Cell, key: str, seeds: list[int]) -> str:
    values = [100 * c.by_seed(key)[s] for s in seeds]
    mean = f"{statistics.fmean(values):.2f}"
    return mean if len(values) < 2 else f"{mean} ± {statistics.stdev(values):.2f}"


def compare(ours: list[Cell], ref: list[Cell], key: str, names: tuple[str, str], method_column: bool = False) -> str:
    """The table; with ``method_column`` each method of ``ours`` pairs with the same method of ``ref``."""
    def first(text: str) -> str:
        return f"| {text} " if method_column else ""

    lines = [f"{first('method')}| target r | seeds | {names[0]} {METRIC_LABELS[key]} (%) | "
             f"{names[1]} {METRIC_LABELS[key]} (%) | Δ paired by seed (pp) | 95 % CI (pp) |",
             f"{first('---')}| ---: | --- | ---: | ---: | ---: | ---: |"]
    for a in ours:
        b = next((c for c in ref if (c.method == a.method or not method_column)
                  and same_rate(c.target_rate, a.target_rate)), None)
        p = paired(a, b, key) if b is not None else None
        if p is None:
            continue
        ci = p.ci95()
        delta = f"{p.mean:+.2f}" + ("" if p.std is None else f" ± {p.std:.2f}")
        interval = "—" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"
        if ci is not None and (ci[0] > 0 or ci[1] < 0):
            interval = f"**{interval}**"
        seeds = sorted(set(a.by_seed(key)) & set(b.by_seed(key)))
        lines.append(f"{first(a.method)}| {rate_label(a.target_rate)} | {', '.join(map(str, seeds))} | "
                     f"{_stat(a, key, seeds)} | {_stat(b, key, seeds)} | {delta} | {interval} |")
    return "\n".join(lines)


def _name(method: str, folder: Path) -> str:
    return folder.name if method == "*" else f"{method} ({folder.name})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ours", help="DIR:METHOD, a benchmark output folder and a method in it ('*': every method)")
    parser.add_argument("ref", help="DIR:METHOD of the reference")
    parser.add_argument("--label", help="name of OURS in the table (default: METHOD of DIR's folder name)")
    parser.add_argument("--across-configs", action="store_true",
                        help="pair by seed although the base configs differ (the differing keys are printed)")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    a_dir, a_method, a_rows = _side(args.ours, parser)
    b_dir, b_method, b_rows = _side(args.ref, parser)
    if (a_method == "*") != (b_method == "*"):
        parser.error("'*' compares each method with itself: use it on both sides")
    a_base, b_base = _base(a_dir), _base(b_dir)
    diff = config_diff(b_base, a_base, NEUTRAL_KEYS) if a_base is not None and b_base is not None else []
    if diff and not args.across_configs:
        parser.error(f"{a_dir} and {b_dir} ran different base configs (benchmark.json: {', '.join(diff)}): "
                     "seeds do not pair (--across-configs pairs them anyway)")
    key, b_key = primary_metric(a_rows), primary_metric(b_rows)
    if key != b_key:
        parser.error(f"the two sweeps rank by different metrics ({key} vs {b_key})")
    names = (args.label or _name(a_method, a_dir), _name(b_method, b_dir))
    table = compare(group_cells(a_rows), group_cells(b_rows), key, names, method_column=a_method == "*")
    if table.count("\n") < 2:
        parser.error("no seed finished at the same rate in both")
    differ = (f"The base configs differ in {', '.join(diff)} (ref -> ours): a seed pairs the initialisation "
              "and the random streams, not the data.\n\n") if diff else ""
    command = " ".join(shlex.quote(a) for a in (args.ours, args.ref))
    text = (f"{names[0]} vs {names[1]}, paired by seed: means ± std over the seeds both finished; "
            f"intervals in **bold** exclude 0.\n\n{differ}{table}\n\n"
            f"Command: `python benchmarks/compare_sweeps.py {command}"
            + (f" --label {shlex.quote(args.label)}" if args.label else "")
            + (" --across-configs" if args.across_configs else "") + "`\n")
    if args.out:
        args.out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
