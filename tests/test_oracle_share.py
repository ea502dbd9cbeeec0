"""The redundancy probe's answer: each rule's share of the dedup oracle's gain over random-dynamic,
against a direct computation, and where users read it (the benchmark report)."""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats as scipy_stats

from ssl_emp.benchmark.report import render_markdown
from ssl_emp.benchmark.stats import group_cells, oracle_shares, ratio_interval

KNN = {  # kNN top-1 per seed at r* = 0.6
    "random-dynamic": [0.300, 0.310, 0.305, 0.298, 0.302],
    "dedup": [0.340, 0.352, 0.341, 0.339, 0.345],
    "emp": [0.320, 0.322, 0.330, 0.310, 0.321],
    "eps-greedy": [0.310, 0.318, 0.311, 0.305, 0.309],
}


def _rows(knn: dict[str, list[float]]) -> list[dict]:
    return [{"run_id": f"{m}_r0.6_s{s}", "method": m, "target_rate": 0.6, "seed": s, "knn_top1": v,
             "achieved_rate": 0.6, "repeat_share": 0.0 if m == "dedup" else 0.3, "epochs": 80}
            for m, values in knn.items() for s, v in enumerate(values)]


def test_ratio_interval_is_fiellers():
    a, b = [1.0, 2.0, 1.5, 0.5, 1.2], [4.0, 4.5, 3.8, 4.1, 4.3]
    lo, hi = ratio_interval(a, b)
    t = scipy_stats.t.ppf(0.975, len(a) - 1)
    for theta in (lo, hi):  # the bounds solve |mean(a - θ b)| = t sd(a - θ b) / sqrt(n)
        d = [x - theta * y for x, y in zip(a, b, strict=True)]
        assert abs(statistics.fmean(d)) == pytest.approx(t * statistics.stdev(d) / math.sqrt(len(d)))
    assert lo < statistics.fmean(a) / statistics.fmean(b) < hi
    # b constant: the ordinary t interval of mean(a), divided by b
    lo, hi = ratio_interval(a, [2.0] * 5)
    half = t * statistics.stdev(a) / math.sqrt(5)
    assert (lo, hi) == pytest.approx(((statistics.fmean(a) - half) / 2, (statistics.fmean(a) + half) / 2))
    assert ratio_interval(a, [0.1, -0.1, 0.2, -0.2, 0.0]) is None  # the oracle gains nothing clear: unbounded
    assert ratio_interval([1.0], [2.0]) is None


def test_oracle_shares_against_a_direct_computation():
    shares = {c.method: s for c, s in oracle_shares(group_cells(_rows(KNN)), "knn_top1")}
    assert set(shares) == {"emp", "eps-greedy"}  # not full, the reference or the oracle itself
    rd, dd, emp = KNN["random-dynamic"], KNN["dedup"], KNN["emp"]
    gain = [100 * (e - r) for e, r in zip(emp, rd, strict=True)]
    gap = [100 * (d - r) for d, r in zip(dd, rd, strict=True)]
    s = shares["emp"]
    assert s.gain.diffs == pytest.approx(tuple(gain)) and s.oracle.diffs == pytest.approx(tuple(gap))
    assert s.share == pytest.approx(statistics.fmean(gain) / statistics.fmean(gap))
    assert s.ci == pytest.approx(ratio_interval(gain, gap))


def test_oracle_shares_need_the_oracle_and_pair_only_common_seeds():
    assert oracle_shares(group_cells(_rows({k: v for k, v in KNN.items() if k != "dedup"})), "knn_top1") == []
    rows = [r for r in _rows(KNN) if not (r["method"] == "emp" and r["seed"] == 4)]
    shares = {c.method: s for c, s in oracle_shares(group_cells(rows), "knn_top1")}
    assert shares["emp"].gain.n == 4 and shares["eps-greedy"].gain.n == 5


def test_report_shows_the_share_and_emp_against_eps_greedy():
    plan = {"base": {"data": {"redundancy": {"unique": 1000, "dup_fraction": 0.1, "copies": 16}}}}
    text = render_markdown(_rows(KNN), plan)
    section = text[text.index("### Share of the oracle's gain"):]
    emp_row = next(line for line in section.splitlines() if line.startswith("| emp |"))
    share = statistics.fmean([e - r for e, r in zip(KNN["emp"], KNN["random-dynamic"], strict=True)]) / \
        statistics.fmean([d - r for d, r in zip(KNN["dedup"], KNN["random-dynamic"], strict=True)])
    assert f"{share:+.2f}" in emp_row
    assert "EMP − ε-greedy (the memory term's contribution)" in section
