"""Can a sweep rank selection rules? Dynamic range and paired noise against the criterion of
docs/method.md "When a benchmark can tell rules apart", with the seeds a cell would need to meet it.

Part of ``ssl_emp.benchmark.report``'s ``report.md`` ("Can this protocol see?").
"""

from __future__ import annotations

import math

from ssl_emp.benchmark.stats import (
    METRIC_LABELS,
    REFERENCE,
    TOL,
    Cell,
    Paired,
    dynamic_range,
    rate_label,
    versus_reference,
)

__all__ = ["MAX_PAIRED_SE_PP", "MIN_RANGE_PP", "protocol_check", "seeds_needed"]

# The criterion of docs/method.md "When a benchmark can tell rules apart", as this project
# sets it: a protocol can rank selection rules when full data beats random-dynamic at the highest
# rate by at least MIN_RANGE_PP points of the primary metric, and the per-seed paired difference
# (method − random-dynamic) has a standard error of at most MAX_PAIRED_SE_PP points.
MIN_RANGE_PP = 5.0
MAX_PAIRED_SE_PP = 0.3


def _passes_se(p: Paired) -> bool:
    return p.se is not None and p.se <= MAX_PAIRED_SE_PP + TOL


def seeds_needed(std: float) -> int:
    """Seeds for which a paired difference with this per-seed std has SE ≤ ``MAX_PAIRED_SE_PP``
    (std / √n ≤ SE), at least 2: how a user sizes a sweep from a pilot's spread."""
    return max(2, math.ceil((std / MAX_PAIRED_SE_PP) ** 2 - TOL))


def _noise_table(pairs: list[tuple[Cell, Paired]]) -> str:
    lines = [f"| target r | method | seeds paired | std of Δ (pp) | SE of Δ (pp) | SE ≤ {MAX_PAIRED_SE_PP:g} pp "
             f"| seeds for SE ≤ {MAX_PAIRED_SE_PP:g} pp at this std |",
             "| ---: | --- | ---: | ---: | ---: | --- | ---: |"]
    for c, p in pairs:
        if p.se is None:
            lines.append(f"| {rate_label(c.target_rate)} | {c.method} | {p.n} | — | — | — (one seed) | — |")
        else:
            lines.append(f"| {rate_label(c.target_rate)} | {c.method} | {p.n} | {p.std:.2f} | {p.se:.2f} | "
                         f"{'pass' if _passes_se(p) else 'FAIL'} | {seeds_needed(p.std)} |")
    return "\n".join(lines)


def protocol_check(cells: list[Cell], key: str) -> str:
    """Dynamic range and paired noise against the ``MIN_RANGE_PP`` / ``MAX_PAIRED_SE_PP`` criterion,
    with a verdict: a sweep that fails it cannot rank selection rules, whatever its tables say."""
    intro = (f"Before any comparison: can this sweep tell selection rules apart (docs/method.md, \"When a benchmark "
             f"can tell rules apart\")? The criterion: dynamic range (mean {METRIC_LABELS[key]} of full data − that "
             f"of {REFERENCE} at the highest rate) ≥ {MIN_RANGE_PP:g} pp, and paired noise (standard error, std / √n "
             f"over seeds, of the per-seed difference method − {REFERENCE}) ≤ {MAX_PAIRED_SE_PP:g} pp.")
    fails, missing = [], []
    rng = dynamic_range(cells, key)
    if rng is None:
        missing.append(f"full and {REFERENCE} results")
        range_line = f"Dynamic range: not measurable yet (needs full and {REFERENCE} results)."
    else:
        value, rate = rng
        ok = value >= MIN_RANGE_PP - TOL
        range_line = f"Dynamic range: {value:+.2f} pp (full − {REFERENCE} at r = {rate:g}): {'pass' if ok else 'FAIL'}."
        if not ok:
            fails.append(f"dynamic range {value:.2f} pp < {MIN_RANGE_PP:g} pp")
    pairs = versus_reference(cells, key)
    measured = [p for _, p in pairs if p.se is not None]
    noisy = [p.se for p in measured if not _passes_se(p)]
    if noisy:
        fails.append(f"{len(noisy)} of {len(measured)} paired SEs > {MAX_PAIRED_SE_PP:g} pp "
                     f"(largest {max(noisy):.2f} pp; the noisiest cell needs "
                     f"{seeds_needed(max(p.std for p in measured))} seeds)")
    if not measured:
        missing.append(f"two seeds of a method and {REFERENCE} at one rate")
    if fails:
        verdict = f"**FAIL**: {'; '.join(fails)}. Differences between rules in this sweep are not evidence."
    elif missing:
        verdict = f"not known yet: needs {' and '.join(missing)}."
    else:
        verdict = "**pass**: this protocol can tell selection rules apart."
    return "\n".join([intro, "", range_line, *(["", _noise_table(pairs)] if pairs else []), "", f"Verdict: {verdict}"])
