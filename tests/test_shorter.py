"""`shorter`, the equal-compute baseline: grid expansion, the achieved rate, its pairing in the report,
the accuracy-against-compute plot, and its rows through --merge-from."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from ssl_emp.benchmark.grid import expand_grid, load_benchmark, shorter_epochs
from ssl_emp.benchmark.stats import group_cells, matched, paired
from ssl_emp.errors import ConfigError
from tests.helpers import ROOT, bench_file, benchmark, forbid_training, load_script, results, rows_by_id, split_sweep

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


def _bench_file(tmp_path: Path, grid: dict, **overrides) -> Path:
    return bench_file(tmp_path, grid, **{"epochs": 4, "optim": {"warmup_epochs": 2}, "data": {"train_subset": 320},
                                         **overrides})


def test_shorter_epochs_round_half_up():
    assert [shorter_epochs(r, 80) for r in (0.7, 0.9, 0.28)] == [24, 8, 58]
    assert shorter_epochs(0.25, 10) == 8  # 7.5 -> 8 (Python's round() gives 8 here but 2 for 2.5)
    assert shorter_epochs(0.75, 10) == 3  # 2.5 -> 3
    assert shorter_epochs(0.99, 10) == 1  # never zero epochs


def test_grid_expands_shorter_with_compressed_schedule_and_the_seed(tmp_path):
    path = _bench_file(tmp_path, {"methods": ["full", "random-dynamic", "shorter"], "rates": [0.5], "seeds": [3, 4],
                                  "method_rates": {"shorter": [0.5, 0.25]}})
    runs = {r.run_id: r for r in expand_grid(load_benchmark(path), tmp_path / "out")}
    assert list(runs) == ["full_s3", "random-dynamic_r0.5_s3", "shorter_r0.5_s3", "shorter_r0.25_s3",
                          "full_s4", "random-dynamic_r0.5_s4", "shorter_r0.5_s4", "shorter_r0.25_s4"]
    short = runs["shorter_r0.5_s4"]
    assert (short.config.epochs, short.config.seed, short.budget_epochs) == (2, 4, 4)
    assert short.config.optim.warmup_epochs == 1.0  # half the run, as in the 4-epoch run
    assert (short.config.pruning.method, short.config.pruning.rate, short.target_rate) == ("full", 0.0, 0.5)
    assert runs["shorter_r0.25_s3"].config.epochs == 3 and runs["shorter_r0.25_s3"].config.optim.warmup_epochs == 1.5
    assert runs["random-dynamic_r0.5_s3"].config.epochs == 4  # the rules keep the grid's E


@pytest.mark.parametrize("grid, message", [
    ({"methods": ["shorter"], "rates": [0.5], "method_rates": {"shorter": [1.0]}}, "needs 0 < r < 1"),
    ({"methods": ["shorter"], "rates": [0.5], "method_params": {"shorter": {"beta": 1}}}, "takes no pruning params"),
    ({"methods": ["shorter"]}, "grid.rates"),
])
def test_bad_shorter_grid_is_one_line(tmp_path, grid, message):
    with pytest.raises(ConfigError, match=message):
        load_benchmark(_bench_file(tmp_path, grid))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """full, random-dynamic, InfoBatch and shorter (at r and at InfoBatch's own rate), two seeds."""
    tmp = tmp_path_factory.mktemp("shorter")
    path = _bench_file(tmp, {"methods": ["full", "random-dynamic", "infobatch", "shorter"], "rates": [0.5],
                             "seeds": [0, 1], "method_rates": {"shorter": [0.5, 0.25]},
                             "method_params": {"infobatch": {"infobatch_delta": 1.0}}})  # prunes all 4 epochs
    out = tmp / "out"
    assert benchmark(path, out) == 0
    return out


@pytest.mark.slow
def test_shorter_rows_carry_target_and_achieved_rate_from_their_visits(sweep):
    rows = rows_by_id(sweep)
    for seed in (0, 1):
        row = rows[f"shorter_r0.5_s{seed}"]
        assert (row["target_rate"], row["epochs"], row["sample_visits"]) == (0.5, 2, 2 * 320)
        assert row["achieved_rate"] == pytest.approx(1 - row["sample_visits"] / (320 * 4))
        assert rows[f"shorter_r0.25_s{seed}"]["achieved_rate"] == pytest.approx(0.25)


@pytest.mark.slow
def test_report_pairs_every_rule_with_both_references(sweep):
    rows = list(rows_by_id(sweep).values())
    cells = group_cells(rows)
    info = next(c for c in cells if c.method == "infobatch")
    rd = next(c for c in cells if c.method == "random-dynamic")
    # InfoBatch (its own rate, about p · (share below the mean) = 0.25 here) meets the shorter run at
    # its achieved rate: within half an epoch (1 / 8) of it.
    partner = matched(cells, "shorter", info)
    assert partner is not None and partner.target_rate == 0.25
    assert abs(partner.stat("achieved_rate")[0] - info.stat("achieved_rate")[0]) <= 1 / 8
    text = (sweep / "report.md").read_text()
    section = text.split("## Every method vs random-dynamic and shorter")[1].split("## ")[0]
    expect_rd = paired(rd, matched(cells, "shorter", rd), "knn_top1")
    expect_info = paired(info, partner, "knn_top1")
    assert expect_rd.n == 2 and expect_info.n == 2
    assert f"| 0.5 | random-dynamic | 0.500 ± 0.000 | — | — | — | {expect_rd.mean:+.2f} ± {expect_rd.std:.2f} | 2 |" in section
    assert f"| {expect_info.mean:+.2f} ± {expect_info.std:.2f} | 2 |" in section
    assert "| r 0.25 (0.250 ± 0.000) |" in section
    assert "| 0.5 | shorter |" not in section  # read the other way round in random-dynamic's row
    if HAVE_MPL:
        assert (sweep / "accuracy_vs_compute.png").stat().st_size > 10_000
        assert "![accuracy_vs_compute](accuracy_vs_compute.png)" in text


@pytest.mark.slow
def test_shorter_rows_survive_a_merge(sweep, tmp_path, monkeypatch, capsys):
    whole, part = Path(shutil.copytree(sweep, tmp_path / "whole")), tmp_path / "part"
    rows = split_sweep(whole, part, lambda r: r["method"] == "shorter")
    forbid_training(monkeypatch)
    config = json.loads((whole / "benchmark.json").read_text())["source"]
    assert benchmark(config, whole, "--merge-from", str(part)) == 0
    assert "4 of 4 rows are runs of this grid" in capsys.readouterr().out
    assert results(whole) == rows


@pytest.mark.slow
def test_equal_compute_table_recomputes_the_report_figures(sweep, tmp_path, capsys):
    script = load_script(ROOT / "benchmarks" / "equal_compute.py")
    out = tmp_path / "table.md"
    assert script.main([f"smoke={sweep}", "--out", str(out), "--json", str(tmp_path / "t.json")]) == 0
    rows = json.loads((tmp_path / "t.json").read_text())
    assert [r["rate"] for r in rows][0] == "0.5" and rows[1]["rate"].startswith("own (")
    cells = group_cells(list(rows_by_id(sweep).values()))
    rd = next(c for c in cells if c.method == "random-dynamic")
    full = next(c for c in cells if c.method == "full")
    expect = paired(rd, matched(cells, "shorter", rd), "knn_top1")
    assert rows[0]["random_dynamic_vs_shorter"]["mean"] == pytest.approx(expect.mean)
    assert rows[0]["kept_random_dynamic"] == pytest.approx(rd.stat("knn_top1")[0] / full.stat("knn_top1")[0])
    assert rows[0]["visits_saved"] == pytest.approx(0.5)
    assert rows[1]["rule"] == "infobatch" and rows[1]["rule_vs_shorter"]["n"] == 2
    assert out.read_text().strip() == capsys.readouterr().out.strip()
