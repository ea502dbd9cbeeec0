"""The answer first: per protocol and rate, what pruning saves, what it keeps, and whether any rule
beats the two ways to spend the same compute without selection.

    python benchmarks/equal_compute.py NAME=DIR [NAME=DIR ...] [--out FILE.md] [--json FILE.json]

For each benchmark folder (one protocol) and each target rate: visits and wall time saved by
random-dynamic against full data; accuracy kept (primary metric over full data's) by random-dynamic
and by `shorter`; random-dynamic − `shorter`; and the best selection rule at that rate (highest mean;
picked after the fact, so its lead over the references is an upper estimate) against both. Methods
that set their own rate (InfoBatch) are a row of their own, paired with the reference runs at their
achieved rate. Every difference is per seed (points), mean ± std with its 95 % Student-t interval;
the figures are the report's (``ssl_emp.benchmark.stats``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ssl_emp.benchmark.results import load_rows
from ssl_emp.benchmark.stats import (
    EQUAL_COMPUTE,
    METRIC_LABELS,
    ORACLE,
    REFERENCE,
    Cell,
    Paired,
    group_cells,
    matched,
    paired,
    primary_metric,
    rate_label,
)
from ssl_emp.run.files import atomic_write_text
from ssl_emp.run.layout import BenchmarkLayout

# Not selection rules: the references themselves, the fixed subset (a rule without a score) and the
# redundancy probe's oracle (it knows which images are copies, which no rule is told).
NOT_RULES = ("full", REFERENCE, EQUAL_COMPUTE, "random-static", ORACLE)


def _diff(p: Paired | None) -> dict[str, Any] | None:
    if p is None:
        return None
    ci = p.ci95()
    return {"mean": p.mean, "std": p.std, "n": p.n, "ci95": list(ci) if ci else None}


def _ratio(a: Cell | None, b: Cell | None, key: str) -> float | None:
    sa, sb = (a.stat(key) if a else None), (b.stat(key) if b else None)
    return sa[0] / sb[0] if sa and sb and sb[0] else None


def protocol_rows(name: str, folder: Path) -> list[dict[str, Any]]:
    """One row per target rate that has random-dynamic, and per own-rate method."""
    rows = load_rows(folder)
    cells = group_cells(rows)
    key = primary_metric(rows)
    full = next((c for c in cells if c.method == "full"), None)
    out = []
    for ref in [c for c in cells if c.method == REFERENCE and c.target_rate is not None]:
        rate = ref.target_rate
        short = matched(cells, EQUAL_COMPUTE, ref)
        rules = [c for c in cells if c.target_rate == rate and c.method not in NOT_RULES and c.stat(key)]
        best = max(rules, key=lambda c: c.stat(key)[0], default=None)
        out.append(_row(name, key, rate_label(rate), ref, short, best, full, cells))
    for own in [c for c in cells if c.target_rate is None and c.method != "full" and c.stat(key)]:
        out.append(_row(name, key, f"own ({own.stat('achieved_rate')[0]:.3f})", matched(cells, REFERENCE, own),
                        matched(cells, EQUAL_COMPUTE, own), own, full, cells))
    return out


def _row(name: str, key: str, rate: str, ref: Cell | None, short: Cell | None, rule: Cell | None,
         full: Cell | None, cells: list[Cell]) -> dict[str, Any]:
    basis = ref or rule
    return {
        "protocol": name, "metric": key, "rate": rate,
        "visits_saved": basis.stat("achieved_rate")[0] if basis and basis.stat("achieved_rate") else None,
        "wall_saved": 1 - r if (r := _ratio(basis, full, "wall_time_s")) is not None else None,
        "kept_random_dynamic": _ratio(ref, full, key), "kept_shorter": _ratio(short, full, key),
        "random_dynamic_vs_shorter": _diff(paired(ref, short, key)) if ref and short else None,
        "rule": rule.method if rule else None, "kept_rule": _ratio(rule, full, key),
        "rule_vs_random_dynamic": _diff(paired(rule, ref, key)) if rule and ref and rule is not ref else None,
        "rule_vs_shorter": _diff(paired(rule, short, key)) if rule and short else None,
        "seeds": len(basis.rows) if basis else 0,
    }


def _pp(d: dict[str, Any] | None) -> str:
    if d is None:
        return "—"
    std = "" if d["std"] is None else f" ± {d['std']:.2f}"
    ci = "" if d["ci95"] is None else f" [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"
    return f"{d['mean']:+.2f}{std}{ci}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f} %"


def _kept(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| protocol (metric) | r | visits saved | wall time saved | kept: random-dynamic / shorter | "
             "random-dynamic − shorter (pp) | best rule (kept) | rule − random-dynamic (pp) | rule − shorter (pp) | seeds |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        rule = "—" if r["rule"] is None else f"{r['rule']} ({_kept(r['kept_rule'])})"
        lines.append(f"| {r['protocol']} ({METRIC_LABELS[r['metric']]}) | {r['rate']} | {_pct(r['visits_saved'])} | "
                     f"{_pct(r['wall_saved'])} | {_kept(r['kept_random_dynamic'])} / {_kept(r['kept_shorter'])} | "
                     f"{_pp(r['random_dynamic_vs_shorter'])} | {rule} | {_pp(r['rule_vs_random_dynamic'])} | "
                     f"{_pp(r['rule_vs_shorter'])} | {r['seeds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", help="NAME=DIR: a protocol's name and its benchmark folder")
    parser.add_argument("--out", type=Path, help="write the table here (markdown)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    rows = []
    for item in args.sweeps:
        name, sep, folder = item.partition("=")
        if not sep or not name or not BenchmarkLayout(folder).results.is_file():
            parser.error(f"expected NAME=DIR with DIR/results.json, got {item!r}")
        rows += protocol_rows(name, Path(folder))
    text = table(rows)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
