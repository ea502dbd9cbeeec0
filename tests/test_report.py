"""The benchmark report's statistics sections, on synthetic rows with hand-computed numbers."""

from __future__ import annotations

import importlib.util
import json

import pytest

from ssl_emp.benchmark.protocol import MAX_PAIRED_SE_PP, MIN_RANGE_PP, seeds_needed
from ssl_emp.benchmark.report import render_markdown, write_report
from ssl_emp.benchmark.stats import dynamic_range, group_cells, paired, primary_metric, t_quantile


def _row(method, rate, seed, knn, test=None, **extra):
    return {"run_id": f"{method}_r{rate}_s{seed}", "method": method, "target_rate": rate, "achieved_rate": rate,
            "seed": seed, "knn_top1": knn, "linear_top1": None, "test_top1": test, "wall_time_s": 10.0,
            "optimizer_steps": 5, "machine": "m", "versions": "v", **extra}


def _old_row(method, rate, seed, knn):
    """A row as results.json held it before test_top1 and the diagnostics existed."""
    row = _row(method, rate, seed, knn)
    del row["test_top1"]
    return row


# An SSL sweep written by an older version: kNN is primary, no diagnostics.
OLD = [
    *(_old_row("full", 0.0, s, k) for s, k in enumerate([0.80, 0.82, 0.84])),
    *(_old_row("emp", 0.7, s, k) for s, k in enumerate([0.78, 0.79, 0.80])),
    *(_old_row("random-dynamic", 0.7, s, k) for s, k in enumerate([0.76, 0.78, 0.80])),
    _old_row("emp", 0.5, 0, 0.75),
    *(_old_row("random-dynamic", 0.5, s, k) for s, k in enumerate([0.77, 0.79])),
]


def _sup(method, rate, tests, junk=None, loss_rep=None, entropy_rep=None):
    """One supervised cell: test top-1 per seed, kNN a constant monitor, optional diagnostics."""
    rows = []
    for s, t in enumerate(tests):
        extra = {"junk_kept_fraction": junk[s] if junk else None, "align_repeatability": None,
                 "loss_repeatability": loss_rep[s] if loss_rep else None,
                 "entropy_repeatability": entropy_rep[s] if entropy_rep else None}
        rows.append(_row(method, rate, s, 0.5, t, **extra))
    return rows


SUPERVISED = [
    *_sup("full", 0.0, [0.90, 0.91, 0.92], junk=[0.1, 0.1, 0.1]),
    *_sup("random-dynamic", 0.5, [0.86, 0.87, 0.88]),
    *_sup("emp", 0.5, [0.87]),  # one seed so far
    *_sup("random-dynamic", 0.8, [0.80, 0.81, 0.82], junk=[0.10, 0.11, 0.09], loss_rep=[0.0, 0.02, 0.04]),
    *_sup("emp", 0.8, [0.830, 0.841, 0.852], junk=[0.05, 0.06, 0.07], loss_rep=[0.1, 0.2, 0.3],
          entropy_rep=[0.5, 0.5, 0.5]),
    *_sup("emp-easy", 0.8, [0.78, 0.80, 0.79]),
]
PLAN = {"source": "sup.yaml", "base": {"algorithm": "supervised", "data": {"inject_noise": 0.1}}}


def _section(text: str, title: str) -> str:
    """The body of one ``## title`` section."""
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_primary_metric_is_test_accuracy_only_when_a_run_has_it():
    assert primary_metric(OLD) == "knn_top1"
    assert primary_metric(SUPERVISED) == "test_top1"
    assert primary_metric([_row("full", 0.0, 0, 0.5, None)]) == "knn_top1"  # key present, no value


def test_student_t_quantile_and_paired_interval():
    assert t_quantile(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(9) == pytest.approx(2.262, abs=1e-3)
    cells = {(c.method, c.target_rate): c for c in group_cells(SUPERVISED)}
    p = paired(cells[("emp", 0.8)], cells[("random-dynamic", 0.8)], "test_top1")
    # diffs 3.0, 3.1, 3.2 pp: std 0.1, SE 0.1/sqrt(3), CI 3.1 ± 4.303 · 0.0577
    assert p.diffs == pytest.approx((3.0, 3.1, 3.2)) and p.std == pytest.approx(0.1)
    assert p.se == pytest.approx(0.1 / 3**0.5) and p.ci95() == pytest.approx((2.8516, 3.3484), abs=1e-4)
    one = paired(cells[("emp", 0.5)], cells[("random-dynamic", 0.5)], "test_top1")
    assert one.n == 1 and one.mean == pytest.approx(1.0) and one.std is None and one.se is None and one.ci95() is None
    assert dynamic_range(list(cells.values()), "test_top1") == (pytest.approx(10.0), 0.8)  # 91 − 81, highest rate


def test_criterion_constants_are_the_issue_10_thresholds():
    assert (MIN_RANGE_PP, MAX_PAIRED_SE_PP) == (5.0, 0.3)


def test_supervised_report_ranks_by_test_accuracy_and_shows_knn_beside_it():
    text = render_markdown(SUPERVISED, PLAN)
    assert "**Primary metric: test top-1** (the trained classifier's test accuracy; kNN top-1 is a monitor)." in text
    results = _section(text, "Results")
    assert len({line.count("|") for line in results.strip().splitlines()}) == 1  # header, rule, rows agree
    assert "| test top-1 (%) | kNN top-1 (%) | linear top-1 (%) | test / full |" in results
    assert "| full | 0 | 0.000 ± 0.000 | 91.00 ± 1.00 | 50.00 ± 0.00 | — | 1.000 |" in results
    assert "| emp | 0.8 | 0.800 ± 0.000 | **84.10 ± 1.10** | 50.00 ± 0.00 | — | 0.924 |" in results  # 84.1 / 91
    assert "| emp-easy | 0.8 | 0.800 ± 0.000 | 79.00 ± 1.00 |" in results
    assert text.index("## Can this protocol see?") < text.index("## Results") < text.index("## EMP vs random-dynamic")
    assert "At r = 0.7" not in text and "| 0.8 | 84.10 ± 1.10 | 81.00 ± 1.00 | +3.10 | +3.10 ± 0.10 (n=3) |" in text
    assert "| 0.8 | +3.10 ± 0.10 (n=3) | +5.10 ± 1.05 (n=3) |" in _section(text, "EMP vs each baseline")


def test_protocol_check_range_noise_and_verdict():
    text = _section(render_markdown(SUPERVISED, PLAN), "Can this protocol see?")
    assert "Dynamic range: +10.00 pp (full − random-dynamic at r = 0.8): pass." in text
    assert "| 0.5 | emp | 1 | — | — | — (one seed) | — |" in text
    assert "| 0.8 | emp | 3 | 0.10 | 0.06 | pass | 2 |" in text  # SE 0.1/sqrt(3); 2 seeds at least
    assert "| 0.8 | emp-easy | 3 | 1.00 | 0.58 | FAIL | 12 |" in text  # diffs −2, −1, −3; (1/0.3)² = 11.1
    assert "Verdict: **FAIL**: 1 of 2 paired SEs > 0.3 pp (largest 0.58 pp; the noisiest cell needs 12 seeds)." in text
    quiet = [r for r in SUPERVISED if r["method"] != "emp-easy"]
    assert "Verdict: **pass**: this protocol can tell selection rules apart." in render_markdown(quiet)
    old = _section(render_markdown(OLD), "Can this protocol see?")
    assert "Dynamic range: +4.00 pp (full − random-dynamic at r = 0.7): FAIL." in old  # 82 − 78 (kNN)
    assert ("Verdict: **FAIL**: dynamic range 4.00 pp < 5 pp; 1 of 1 paired SEs > 0.3 pp (largest 0.58 pp; "
            "the noisiest cell needs 12 seeds).") in old
    early = render_markdown([r for r in SUPERVISED if r["method"] == "full" or r["seed"] == 0])
    assert "Verdict: not known yet: needs two seeds of a method and random-dynamic at one rate." in early


def test_seeds_needed_for_the_paired_se_criterion():
    assert seeds_needed(0.3) == 2 and seeds_needed(0.6) == 4 and seeds_needed(0.61) == 5  # (0.61/0.3)² = 4.13
    assert seeds_needed(1.5) == 25 and seeds_needed(0.0) == 2


def test_every_method_vs_random_dynamic_with_intervals():
    title = "Every method vs random-dynamic and shorter"
    text = _section(render_markdown(SUPERVISED, PLAN), title)
    assert "| target r | method | achieved r | Δ test vs random-dynamic (pp) | n | 95 % CI (pp) |" in text
    assert "| 0.5 | emp | 0.500 | +1.00 | 1 | — |" in text
    assert "| 0.8 | emp | 0.800 ± 0.000 | +3.10 ± 0.10 | 3 | **[+2.85, +3.35]** |" in text  # excludes 0: bold
    assert "| 0.8 | emp-easy | 0.800 ± 0.000 | -2.00 ± 1.00 | 3 | [-4.48, +0.48] |" in text  # −2 ± 4.303 · 1/sqrt(3)
    old = _section(render_markdown(OLD), title)
    assert "| 0.7 | emp | 0.700 ± 0.000 | +1.00 ± 1.00 | 3 | [-1.48, +3.48] |" in old and "Δ kNN vs random-dynamic" in old


def test_a_static_rule_is_paired_with_random_static_at_its_rate():
    title = "Static rules vs random-static"
    rows = [*_sup("random-static", 0.5, [0.80, 0.81, 0.82]), *_sup("random-dynamic", 0.5, [0.80, 0.80, 0.80]),
            *_sup("prototypes@enc", 0.5, [0.78, 0.80, 0.80]), *_sup("emp", 0.5, [0.9, 0.9, 0.9])]
    for r in rows:
        r["compute_visits"] = 110 if r["method"].startswith("prototypes") else 100
    text = _section(render_markdown(rows, PLAN), title)
    # per seed -2, -1, -2: mean -1.67, std 0.58; a dynamic rule (emp) and random-static itself are not listed
    assert "| 0.5 | prototypes@enc | 110 ± 0 | -1.67 ± 0.58 | 3 | [-3.10, -0.23] |" in text.replace("**", "")
    assert "| emp |" not in text and "| random-static |" not in text
    without = [r for r in rows if r["method"] != "random-static"]
    assert f"## {title}" not in render_markdown(without, PLAN)


def test_repeatability_table_shows_only_logged_signals():
    text = _section(render_markdown(SUPERVISED, PLAN), "Signal repeatability")
    assert "near 0 the score is noise on this data" in text and "0.10 for SimCLR loss" in text
    assert "| method | target r | loss | entropy |" in text  # align: no run logged it
    assert "| random-dynamic | 0.8 | 0.020 ± 0.020 | — |" in text
    assert "| emp | 0.8 | 0.200 ± 0.100 | 0.500 ± 0.000 |" in text
    assert "| full |" not in text and "| emp-easy |" not in text  # cells without values are left out


def test_junk_probe_against_the_injected_share():
    text = _section(render_markdown(SUPERVISED, PLAN), "Junk probe")
    assert "Random selection keeps the injected share (10.00% of the training images)" in text
    assert "| method | target r | junk in kept set (%) | injected (%) | test top-1 (%) |" in text
    assert "| full | 0 | 10.00 ± 0.00 | 10.00 | 91.00 ± 1.00 |" in text
    assert "| random-dynamic | 0.8 | 10.00 ± 1.00 | 10.00 | 81.00 ± 1.00 |" in text
    assert "| emp | 0.8 | 6.00 ± 1.00 | 10.00 | 84.10 ± 1.10 |" in text
    # Without the plan the injected share is unknown, not guessed.
    assert "| emp | 0.8 | 6.00 ± 1.00 | — | 84.10 ± 1.10 |" in render_markdown(SUPERVISED)


@pytest.mark.slow
def test_old_results_file_renders_without_the_new_sections(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(OLD))
    (tmp_path / "benchmark.json").write_text(json.dumps({"source": "old.yaml", "base": {"data": {}}, "runs": []}))
    text = write_report(tmp_path).read_text()
    assert "**Primary metric: kNN top-1**." in text and "test top-1" not in text
    assert "| emp | 0.7 | 0.700 ± 0.000 | **79.00 ± 1.00** | — | 0.963 |" in text
    assert "## Signal repeatability" not in text and "## Junk probe" not in text


def test_methods_outside_the_known_list_are_ordered_after_known_ones():
    rows = [_row("zz-rule", 0.5, 0, 0.7), _row("aa-rule", 0.5, 0, 0.7), _row("emp", 0.5, 0, 0.7),
            _row("random-dynamic", 0.5, 0, 0.6)]
    assert [c.method for c in group_cells(rows)] == ["random-dynamic", "emp", "aa-rule", "zz-rule"]
    text = render_markdown(rows)
    assert "| 0.5 | zz-rule | 0.500 | +10.00 | 1 | — |" in text and "emp − zz-rule" in text


def test_supervised_folder_report_and_plots(tmp_path):
    runs = [{"run_id": r["run_id"], "method": r["method"], "target_rate": r["target_rate"], "seed": r["seed"]}
            for r in SUPERVISED]
    (tmp_path / "results.json").write_text(json.dumps(SUPERVISED[:-1]))  # emp-easy's last seed still running
    (tmp_path / "benchmark.json").write_text(json.dumps({**PLAN, "runs": runs}))
    text = write_report(tmp_path).read_text()
    assert "15 of 16 runs finished" in text and "| emp-easy | 0.8 | 0.800 ± 0.000 | 79.00 ± 1.41 |" in text
    assert "| 0.8 | emp-easy | 2 | 0.71 | 0.50 | FAIL |" in text  # diffs −2, −1
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "accuracy_vs_rate.png").stat().st_size > 1000 and "(accuracy_vs_rate.png)" in text
