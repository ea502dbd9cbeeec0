"""`dedup`, the redundancy probe's oracle, and `rstar` in a grid: expansion, the achieved rate, the
dry run, the report's repeat-share table and the rows through --merge-from."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import pytest

from ssl_emp.benchmark.grid import expand_grid, load_benchmark, rstar
from ssl_emp.benchmark.report import render_markdown
from ssl_emp.benchmark.stats import group_cells
from ssl_emp.benchmark.sweep import make_row
from ssl_emp.benchmark.tables import redundancy_table
from ssl_emp.config import redundant_size
from ssl_emp.errors import ConfigError
from ssl_emp.pruning import DynamicPruner
from tests.helpers import ROOT, bench_file, benchmark, forbid_training, load_script, results, rows_by_id, split_sweep

# 160 unique digits, half of them 3 times: N = 80 + 240 = 320, r* = 1 − 160/320 = 0.5
REDUNDANT = {"unique": 160, "dup_fraction": 0.5, "copies": 3}


def _bench_file(tmp_path: Path, grid: dict, redundancy: dict | None = REDUNDANT) -> Path:
    data = {"train_subset": 320, **({"redundancy": redundancy} if redundancy else {})}
    return bench_file(tmp_path, grid, epochs=2, data=data, optim={"warmup_epochs": 1})


def test_rstar_is_a_short_decimal_whose_budget_is_exactly_u():
    assert rstar(1000, 2500) == 0.6 and rstar(160, 320) == 0.5
    for unique in range(2, 60):
        for copies in (2, 3, 5):
            n = redundant_size(unique, 0.5, copies)
            r = rstar(unique, n)
            assert 1 - Fraction(unique, n) <= Fraction(repr(r)) < 1 - Fraction(unique - 1, n)
            if r <= 0.95:  # the pruner's highest rate
                assert DynamicPruner(num_samples=n, method="random-dynamic", pruning_rate=r, epochs=1).budget == unique


def test_grid_expands_dedup_at_rstar_with_the_unique_images_for_e_epochs(tmp_path):
    path = _bench_file(tmp_path, {"methods": ["full", "random-dynamic", "shorter", "dedup"], "rates": ["rstar", 0.75],
                                  "seeds": [3]})
    bench = load_benchmark(path)
    assert bench.rstar == 0.5 and bench.rates == [0.5, 0.75]
    runs = {r.run_id: r for r in expand_grid(bench, tmp_path / "out")}
    assert list(runs) == ["full_s3", "random-dynamic_r0.5_s3", "shorter_r0.5_s3", "random-dynamic_r0.75_s3",
                          "shorter_r0.75_s3", "dedup_r0.5_s3"]
    dedup = runs["dedup_r0.5_s3"]
    assert (dedup.method, dedup.target_rate, dedup.seed, dedup.config.seed) == ("dedup", 0.5, 3, 3)
    assert (dedup.config.epochs, dedup.budget_epochs, dedup.budget_samples) == (2, 2, 320)
    assert (dedup.config.pruning.method, dedup.config.pruning.rate) == ("full", 0.0)
    red = dedup.config.data.redundancy
    assert (red.unique, red.dup_fraction, red.copies, red.near, red.dedup) == (160, 0.5, 3, False, True)
    for rid in ("full_s3", "random-dynamic_r0.5_s3", "shorter_r0.5_s3"):
        assert not runs[rid].config.data.redundancy.dedup and runs[rid].config.data.redundancy.unique == 160
    assert runs["random-dynamic_r0.5_s3"].config.pruning.rate == 0.5 and runs["shorter_r0.5_s3"].config.epochs == 1


def test_dedup_row_achieves_one_minus_u_over_n_against_the_redundant_set(tmp_path):
    path = _bench_file(tmp_path, {"methods": ["dedup"]})
    (run,) = expand_grid(load_benchmark(path), tmp_path / "out")
    summary = {"achieved_rate": 0.0, "knn_top1": 0.5, "wall_time_s": 1.0, "train_time_s": 1.0, "optimizer_steps": 6,
               "images_seen": 160 * 2, "epochs": 2, "num_samples": 160}
    row = make_row(run, summary, None)
    assert (row["target_rate"], row["achieved_rate"], row["num_samples"]) == (0.5, pytest.approx(0.5), 160)


@pytest.mark.parametrize("grid, redundancy, message", [
    ({"methods": ["full", "dedup"]}, None, "grid method 'dedup' trains on the unique images"),
    ({"methods": ["random-dynamic"], "rates": ["rstar"]}, None, "has 'rstar'.*set data.redundancy.unique"),
    ({"methods": ["random-dynamic"], "rates": ["rstar", 0.5]}, REDUNDANT, r"lists r\* = 0.5 twice"),
    ({"methods": ["dedup"], "method_rates": {"dedup": [0.5]}}, REDUNDANT, r"whose rate is r\* = 0.5"),
    ({"methods": ["dedup"], "method_params": {"dedup": {"beta": 1}}}, REDUNDANT, "takes no pruning params"),
    ({"methods": ["full"]}, {**REDUNDANT, "dedup": True}, "list the grid method 'dedup' instead"),
    ({"methods": ["dedup"]}, {**REDUNDANT, "copies": 1}, "copies must be an integer >= 2"),
])
def test_bad_dedup_grid_is_one_line(tmp_path, grid, redundancy, message):
    with pytest.raises(ConfigError, match=message) as exc:
        load_benchmark(_bench_file(tmp_path, grid, redundancy))
    assert "\n" not in str(exc.value)


def test_dry_run_lists_dedup(tmp_path, capsys):
    path = _bench_file(tmp_path, {"methods": ["full", "random-dynamic", "dedup"], "rates": ["rstar"], "seeds": [0]})
    assert benchmark(path, tmp_path / "out", "--dry-run") == 0
    text = capsys.readouterr().out
    assert "3 runs" in text and "random-dynamic_r0.5_s0  method=random-dynamic rate=0.5 seed=0 epochs=2" in text
    assert "dedup_r0.5_s0           method=dedup rate=0.5 seed=0 epochs=2  [todo]" in text
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """full, random-dynamic at r* and dedup on the redundant digits set, one seed, two epochs."""
    tmp = tmp_path_factory.mktemp("dedup")
    path = _bench_file(tmp, {"methods": ["full", "random-dynamic", "dedup"], "rates": ["rstar"], "seeds": [0]})
    out = tmp / "out"
    assert benchmark(path, out) == 0
    return out


@pytest.mark.slow
def test_sweep_rows_carry_repeat_share_distinct_images_and_rates(sweep):
    rows = rows_by_id(sweep)
    assert list(rows) == ["full_s0", "random-dynamic_r0.5_s0", "dedup_r0.5_s0"]
    full, rd, dedup = rows.values()
    assert (full["repeat_share"], full["distinct_unique"], full["num_samples"]) == (pytest.approx(0.5), 160, 320)
    assert (dedup["repeat_share"], dedup["distinct_unique"], dedup["num_samples"]) == (0.0, 160, 160)
    assert (dedup["target_rate"], dedup["sample_visits"], dedup["epochs"]) == (0.5, 320, 2)
    assert dedup["achieved_rate"] == pytest.approx(1 - 320 / (320 * 2))
    assert rd["achieved_rate"] == pytest.approx(0.5) and rd["sample_visits"] == dedup["sample_visits"]
    assert 0 < rd["repeat_share"] < 0.5 and rd["distinct_unique"] < 160
    header = (sweep / "results.csv").read_text().splitlines()[0].split(",")
    assert header[-2:] == ["repeat_share", "distinct_unique"]


@pytest.mark.slow
def test_report_has_the_repeat_share_table(sweep):
    rows = rows_by_id(sweep)
    text = (sweep / "report.md").read_text()
    section = text.split("## Redundancy probe\n", 1)[1].split("\n## ", 1)[0]
    assert "U = 160 unique images make N = 320 training samples, so r* = 1 − U/N = 0.5" in section
    assert "distinct unique images per epoch (of U = 160)" in section
    assert "| full | 0 | 50.00 | 50.00 | 160.0 |" in section
    assert "| dedup | 0.5 | 0.00 | 50.00 | 160.0 |" in section
    rd = rows["random-dynamic_r0.5_s0"]
    assert (f"| random-dynamic | 0.5 | {100 * rd['repeat_share']:.2f} | 50.00 | {rd['distinct_unique']:.1f} | "
            f"{100 * rd['knn_top1']:.2f} |") in section
    # dedup meets random-dynamic at r* in the equal-compute comparison
    versus = text.split("## Every method vs random-dynamic and shorter")[1].split("\n## ")[0]
    assert "| 0.5 | dedup | 0.500 |" in versus


@pytest.mark.slow
def test_no_redundancy_no_table(sweep):
    rows = [{k: v for k, v in r.items() if k not in ("repeat_share", "distinct_unique")} for r in rows_by_id(sweep).values()]
    assert redundancy_table(group_cells(rows), "knn_top1", (160, 320)) is None
    assert "## Redundancy probe" not in render_markdown(rows)


@pytest.mark.slow
def test_dedup_rows_survive_a_merge(sweep, tmp_path, monkeypatch, capsys):
    whole, part = Path(shutil.copytree(sweep, tmp_path / "whole")), tmp_path / "part"
    rows = split_sweep(whole, part, lambda r: r["method"] == "dedup")
    shutil.rmtree(whole / "runs" / "dedup_r0.5_s0")  # only rows move: the run folder stays where it ran
    forbid_training(monkeypatch)
    config = json.loads((whole / "benchmark.json").read_text())["source"]
    assert benchmark(config, whole, "--merge-from", str(part)) == 0
    assert "1 of 1 rows are runs of this grid" in capsys.readouterr().out
    assert results(whole) == rows
    assert "| dedup | 0.5 | 0.00 |" in (whole / "report.md").read_text()


@pytest.mark.slow
def test_equal_compute_table_never_names_the_oracle_a_rule(sweep, tmp_path):
    """dedup knows which images are copies: the answer table's "best rule" must not be it."""
    script = load_script(ROOT / "benchmarks" / "equal_compute.py")
    assert script.main([f"redundant={sweep}", "--out", str(tmp_path / "t.md"), "--json", str(tmp_path / "t.json")]) == 0
    rows = json.loads((tmp_path / "t.json").read_text())
    assert [(r["rate"], r["rule"]) for r in rows] == [("0.5", None)]
