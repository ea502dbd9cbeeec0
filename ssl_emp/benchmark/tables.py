"""The benchmark report's tables: each a function from grouped cells (``ssl_emp.benchmark.stats``) to a
markdown table, assembled into ``report.md`` by ``ssl_emp.benchmark.report``.
"""

from __future__ import annotations

from collections.abc import Callable

from ssl_emp.benchmark.stats import (
    EQUAL_COMPUTE,
    HEADLINE_RATE,
    METRIC_LABELS,
    ORACLE,
    REFERENCE,
    STATIC_REFERENCE,
    TOL,
    Cell,
    Paired,
    count_stats,
    find_cell,
    oracle_shares,
    paired,
    rate_label,
    same_rate,
    versus,
    versus_static,
)
from ssl_emp.pruning import FULL_DATA
from ssl_emp.run.summary import REPEATABILITY_KEYS

__all__ = [
    "count_table",
    "curation_table",
    "metric_short_name",
    "emp_vs_baselines",
    "emp_vs_random",
    "junk_table",
    "oracle_table",
    "redundancy_table",
    "repeatability_table",
    "results_table",
    "static_vs_random_table",
    "versus_reference_table",
]


def _fmt(stat: tuple[float, float, int] | None, scale: float = 1.0, digits: int = 2) -> str:
    if stat is None:
        return "—"
    mean, std, n = stat
    text = f"{scale * mean:.{digits}f}"
    return text if n < 2 else f"{text} ± {scale * std:.{digits}f}"


def metric_short_name(key: str) -> str:
    """``kNN``, ``test``, ``linear``: the metric's name in narrow table headers."""
    return METRIC_LABELS[key].split()[0]


def _pp(p: Paired | None) -> str:
    """A paired difference as ``+1.00 ± 0.50 (n=3)`` (points; no std for one seed)."""
    if p is None:
        return "—"
    std = "" if p.std is None else f" ± {p.std:.2f}"
    return f"{p.mean:+.2f}{std} (n={p.n})"


# ----------------------------------------------------------------------------- results


def _best(cells: list[Cell], key: str) -> set[int]:
    """ids of the cells with the best mean ``key`` at their target rate (groups of >= 2 cells)."""
    best: set[int] = set()
    for rate in {c.target_rate for c in cells if c.target_rate is not None}:
        means = {id(c): s[0] for c in cells if same_rate(c.target_rate, rate) and (s := c.stat(key))}
        if len(means) >= 2:
            top = max(means.values())
            best |= {k for k, mean in means.items() if mean >= top - TOL}
    return best


def results_table(cells: list[Cell], key: str = "knn_top1") -> str:
    """The main table: mean ± std over seeds per (method, rate), the best primary metric ``key`` per
    rate in bold; kNN top-1 beside a test-accuracy primary (it is then the monitor)."""
    metrics = [key, *(["knn_top1"] if key != "knn_top1" and any(c.stat("knn_top1") for c in cells) else [])]
    full = next((c.stat(key) for c in cells if c.method == FULL_DATA), None)
    best = _best(cells, key)
    lines = [
        "| method | target r | achieved r | " + "".join(f"{METRIC_LABELS[k]} (%) | " for k in metrics)
        + f"linear top-1 (%) | {metric_short_name(key)} / full | wall time (s) | optimizer steps | seeds |",
        "| --- |" + " ---: |" * (len(metrics) + 7),
    ]
    for c in cells:
        main = c.stat(key)
        texts = [_fmt(c.stat(k), 100) for k in metrics]
        if id(c) in best:
            texts[0] = f"**{texts[0]}**"
        ratio = f"{main[0] / full[0]:.3f}" if main and full and full[0] > 0 else "—"
        seeds = f"{len(c.rows)}/{c.planned}" if c.planned and c.planned >= len(c.rows) else str(len(c.rows))
        lines.append(
            f"| {c.method} | {rate_label(c.target_rate)} | {_fmt(c.stat('achieved_rate'), 1, 3)} | "
            + "".join(f"{t} | " for t in texts)
            + f"{_fmt(c.stat('linear_top1'), 100)} | {ratio} | {_fmt(c.stat('wall_time_s'), 1, 0)} | "
            f"{_fmt(c.stat('optimizer_steps'), 1, 0)} | {seeds} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- comparisons


def _ci_text(p: Paired | None) -> str:
    """``mean ± std`` and the 95 % Student-t interval, the interval in bold when it excludes 0."""
    if p is None:
        return "— | — | —"
    ci = p.ci95()
    text = "—" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"
    if ci is not None and (ci[0] > 0 or ci[1] < 0):
        text = f"**{text}**"
    std = "" if p.std is None else f" ± {p.std:.2f}"
    return f"{p.mean:+.2f}{std} | {p.n} | {text}"


def versus_reference_table(cells: list[Cell], key: str) -> str:
    """Every method minus both references at the same compute, seed by seed: random-dynamic (the
    same visits, no selection) and `shorter` (the same visits as fewer full-data epochs). A method
    that sets its own rate is paired with the reference cell at its achieved rate (``matched``)."""
    refs = {ref: {id(c): (b, p) for c, b, p in versus(cells, key, ref)} for ref in (REFERENCE, EQUAL_COMPUTE)}
    # `shorter` vs random-dynamic is random-dynamic's row, read the other way round
    rows = [c for c in cells if c.method != EQUAL_COMPUTE and any(id(c) in pairs for pairs in refs.values())]
    if not rows:
        return f"No method shares a seed with {REFERENCE} or {EQUAL_COMPUTE} at its compute yet."
    s = metric_short_name(key)
    lines = [f"| target r | method | achieved r | Δ {s} vs {REFERENCE} (pp) | n | 95 % CI (pp) | "
             f"Δ {s} vs {EQUAL_COMPUTE} (pp) | n | 95 % CI (pp) | {EQUAL_COMPUTE} run (achieved r) |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for c in rows:
        short = refs[EQUAL_COMPUTE].get(id(c))
        which = "—" if short is None else f"r {rate_label(short[0].target_rate)} ({_fmt(short[0].stat('achieved_rate'), 1, 3)})"
        lines.append(f"| {rate_label(c.target_rate)} | {c.method} | {_fmt(c.stat('achieved_rate'), 1, 3)} | "
                     f"{_ci_text(refs[REFERENCE].get(id(c), (None, None))[1])} | "
                     f"{_ci_text(None if short is None else short[1])} | {which} |")
    return "\n".join(lines)


def static_vs_random_table(cells: list[Cell], key: str) -> str | None:
    """Every static rule minus random-static at its rate, seed by seed (``versus_static``): the same
    kept-set size, chosen once by the rule's score or at random; None when the grid has no such pair."""
    pairs = versus_static(cells, key)
    if not pairs:
        return None
    s = metric_short_name(key)
    lines = [f"| target r | method | compute (visits) | Δ {s} vs {STATIC_REFERENCE} (pp) | n | 95 % CI (pp) |",
             "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for c, p in pairs:
        lines.append(f"| {rate_label(c.target_rate)} | {c.method} | {_fmt(c.stat('compute_visits'), 1, 0)} | "
                     f"{_ci_text(p)} |")
    return "\n".join(lines)


def emp_vs_random(cells: list[Cell], ours: str = "emp", ref: str = REFERENCE, key: str = "knn_top1") -> str:
    """EMP minus random-dynamic at every shared rate: both means, the difference of means and the
    paired per-seed difference (percentage points) of ``key`` and of linear top-1; the headline
    rate first in prose."""
    pairs = []
    for a in cells:
        b = find_cell(cells, ref, a.target_rate) if a.method == ours and a.target_rate is not None else None
        if b is not None and (a.rows or b.rows):
            pairs.append((a, b))
    if not pairs:
        return f"No rate has both {ours} and {ref} results yet."

    def delta(a: Cell, b: Cell, k: str) -> str:
        sa, sb = a.stat(k), b.stat(k)
        return "—" if sa is None or sb is None else f"{100 * (sa[0] - sb[0]):+.2f}"

    out = []
    head = next(((a, b) for a, b in pairs if same_rate(a.target_rate, HEADLINE_RATE)), None)
    if head is not None:
        a, b = head
        out += [f"At r = {HEADLINE_RATE:g}: {ours} {METRIC_LABELS[key]} {_fmt(a.stat(key), 100)}% "
                f"({len(a.rows)} seeds) vs {ref} {_fmt(b.stat(key), 100)}% ({len(b.rows)} seeds): "
                f"difference {delta(a, b, key)} pp (paired over seeds: {_pp(paired(a, b, key))}).", ""]
    s = metric_short_name(key)
    out += [f"| target r | {ours} {s} (%) | {ref} {s} (%) | Δ {s} (pp) | paired Δ {s} (pp) | "
            f"{ours} linear (%) | {ref} linear (%) | Δ linear (pp) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for a, b in pairs:
        out.append(
            f"| {rate_label(a.target_rate)} | {_fmt(a.stat(key), 100)} | {_fmt(b.stat(key), 100)} | "
            f"{delta(a, b, key)} | {_pp(paired(a, b, key))} | {_fmt(a.stat('linear_top1'), 100)} | "
            f"{_fmt(b.stat('linear_top1'), 100)} | {delta(a, b, 'linear_top1')} |"
        )
    return "\n".join(out)


def emp_vs_baselines(cells: list[Cell], ours: str = "emp", key: str = "knn_top1") -> str:
    """EMP minus every fixed-rate baseline at every rate: paired per-seed Δ of ``key`` (pp), so the
    report answers "does EMP beat X at rate r" for each X, not only for random-dynamic."""
    rates = sorted({c.target_rate for c in cells if c.method == ours and c.target_rate is not None and c.rows})
    refs = [m for m in dict.fromkeys(c.method for c in cells)
            if m not in (ours, FULL_DATA) and any(c.method == m and c.target_rate is not None for c in cells)]
    if not rates or not refs:
        return f"No rate has both {ours} and a baseline yet."
    out = ["| target r | " + " | ".join(f"{ours} − {m}" for m in refs) + " |",
           "| ---: |" + " ---: |" * len(refs)]
    for rate in rates:
        a = find_cell(cells, ours, rate)
        row = []
        for m in refs:
            b = find_cell(cells, m, rate)
            row.append(_pp(paired(a, b, key)) if a is not None and b is not None else "—")
        out.append(f"| {rate_label(rate)} | " + " | ".join(row) + " |")
    return "\n".join(out)


# ----------------------------------------------------------------------------- diagnostics


def repeatability_table(cells: list[Cell]) -> str | None:
    """Per (method, rate) the mean ± std over seeds of each signal's last-epoch repeatability, only
    the signals some run logged; None when no run did."""
    keys = [k for k in REPEATABILITY_KEYS if any(c.stat(k) for c in cells)]
    if not keys:
        return None
    names = [k.removesuffix("_repeatability") for k in keys]
    lines = ["| method | target r | " + " | ".join(names) + " |", "| --- | ---: |" + " ---: |" * len(keys)]
    for c in cells:
        stats = [c.stat(k) for k in keys]
        if any(stats):
            lines.append(f"| {c.method} | {rate_label(c.target_rate)} | " + " | ".join(_fmt(s, 1, 3) for s in stats) + " |")
    return "\n".join(lines)


def _diagnostic_table(cells: list[Cell], present: str, header: list[str],
                      row: Callable[[Cell], list[str]]) -> str | None:
    """One row per (method, rate) cell whose runs recorded ``present``; None when none did."""
    rows = [c for c in cells if c.stat(present)]
    if not rows:
        return None
    lines = ["| method | target r | " + " | ".join(header) + " |", "| --- | ---: |" + " ---: |" * len(header)]
    lines += [f"| {c.method} | {rate_label(c.target_rate)} | " + " | ".join(row(c)) + " |" for c in rows]
    return "\n".join(lines)


def junk_table(cells: list[Cell], key: str, injected: float | None) -> str | None:
    """Per (method, rate) the share of the kept set that is injected junk (mean ± std over seeds),
    the injected share and the primary metric; None when no run injected junk."""
    share = "—" if injected is None else f"{100 * injected:.2f}"
    return _diagnostic_table(
        cells, "junk_kept_fraction",
        ["junk in kept set (%)", "injected (%)", f"{METRIC_LABELS[key]} (%)"],
        lambda c: [_fmt(c.stat("junk_kept_fraction"), 100), share, _fmt(c.stat(key), 100)])


def redundancy_table(cells: list[Cell], key: str, design: tuple[int, int] | None) -> str | None:
    """Per (method, rate) the share of the kept set that repeats an image already kept and the
    distinct unique images trained per epoch (each a mean over epochs, then mean ± std over seeds),
    beside the data set's own repeat share (N − U) / N and the primary metric; None when no run
    trained on a redundant set."""
    own = "—" if design is None else f"{100 * (design[1] - design[0]) / design[1]:.2f}"
    of = "" if design is None else f" (of U = {design[0]})"
    return _diagnostic_table(
        cells, "repeat_share",
        ["repeats in kept set (%)", "repeats in data set (%)", f"distinct unique images per epoch{of}",
         f"{METRIC_LABELS[key]} (%)"],
        lambda c: [_fmt(c.stat("repeat_share"), 100), own, _fmt(c.stat("distinct_unique"), 1, 1),
                   _fmt(c.stat(key), 100)])


def oracle_table(cells: list[Cell], key: str) -> str | None:
    """Per method at r*: its gain over random-dynamic, the oracle's, the share of the oracle's gain it
    captures with Fieller's 95 % interval, and the repeats it keeps; None without an oracle."""
    shares = oracle_shares(cells, key)
    if not shares:
        return None
    lines = [f"| method | {REFERENCE} gain (pp) | {ORACLE} gain (pp) | share of {ORACLE}'s gain | 95 % interval | "
             "n | repeats in kept set (%) | compute (visits, curation included) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c, s in shares:
        share = "—" if s.share is None else f"{s.share:+.2f}"
        ci = "— (oracle gain not clear of 0)" if s.ci is None else f"[{s.ci[0]:+.2f}, {s.ci[1]:+.2f}]"
        lines.append(f"| {c.method} | {_pp(s.gain)} | {_pp(s.oracle)} | {share} | {ci} | {s.gain.n} | "
                     f"{_fmt(c.stat('repeat_share'), 100)} | {_fmt(c.stat('compute_visits'), 1, 0)} |")
    emp, eps = (find_cell(cells, m, shares[0][0].target_rate) for m in ("emp", "eps-greedy"))
    p = paired(emp, eps, key) if emp is not None and eps is not None else None
    if p is not None:  # EMP with beta = 0 is eps-greedy: what the memory term adds to the loss alone
        lines += ["", f"EMP − ε-greedy (the memory term's contribution), paired by seed: {_ci_text(p)} "
                  "(mean ± std | n | 95 % interval)."]
    return "\n".join(lines)


def curation_table(cells: list[Cell], key: str) -> str | None:
    """Per curation cell: where its embeddings came from and what they cost beside the run (the
    embedding pass, a pre-run's visits; an encoder trained elsewhere named, not added), SemDeDup's
    implied ε and the compute the plots place it at; None when no run curated."""
    rows = [c for c in cells if any(r.get("embed_source") for r in c.rows)]
    if not rows:
        return None
    lines = ["| method | target r | source | achieved r | implied ε | embedding passes | embedding (s) | "
             "pre-run visits | encoder visits (named, not added) | training visits | compute (visits) | "
             f"compute (s) | {METRIC_LABELS[key]} (%) |", "| --- | ---: | --- |" + " ---: |" * 10]
    for c in rows:
        source = ", ".join(sorted({r["embed_source"] for r in c.rows if r.get("embed_source")}))
        lines.append(f"| {c.method} | {rate_label(c.target_rate)} | {source} | {_fmt(c.stat('achieved_rate'), 1, 3)} | "
                     f"{_fmt(c.stat('semdedup_eps'), 1, 4)} | {_fmt(c.stat('embed_forward_passes'), 1, 0)} | "
                     f"{_fmt(c.stat('embed_time_s'), 1, 1)} | {_fmt(c.stat('prerun_visits'), 1, 0)} | "
                     f"{_fmt(c.stat('encoder_visits'), 1, 0)} | {_fmt(c.stat('sample_visits'), 1, 0)} | "
                     f"{_fmt(c.stat('compute_visits'), 1, 0)} | {_fmt(c.stat('compute_time_s'), 1, 0)} | "
                     f"{_fmt(c.stat(key), 100)} |")
    return "\n".join(lines)


def count_table(series: dict[str, list[int]]) -> str:
    """The numbers behind the count plot, one row per method (``pooled_counts`` at one rate)."""
    lines = ["| method | mean count | CV of count | never trained (%) | trained once (%) | max count |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for method, counts in series.items():
        st = count_stats(counts)
        lines.append(f"| {method} | {st['mean']:.2f} | {st['cv']:.2f} | {100 * st['never']:.1f} | "
                     f"{100 * st['once']:.1f} | {st['max']} |")
    return "\n".join(lines)
