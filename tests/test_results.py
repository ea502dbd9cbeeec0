"""ssl_emp.benchmark.results: the result files shared by the benchmark runner and the report."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_emp.benchmark.grid import run_id
from ssl_emp.benchmark.results import COLUMNS, count_histogram, load_rows, parse_run_id, run_counts, write_results
from ssl_emp.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_report_and_benchmark_do_not_import_each_other_cyclically():
    code = ("import sys, ssl_emp.benchmark.report; assert 'ssl_emp.benchmark.sweep' not in sys.modules, 'report imports benchmark'; "
            "import ssl_emp.benchmark.results, ssl_emp.benchmark.sweep")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert proc.returncode == 0, proc.stderr


def test_write_and_load_rows_round_trip(tmp_path):
    assert load_rows(tmp_path) == []
    rows = [{"run_id": "full_s0", "method": "full", "knn_top1": 0.5, "linear_top1": None, "count_histogram": [0, 3]}]
    write_results(tmp_path, rows)
    assert load_rows(tmp_path) == rows
    with open(tmp_path / "results.csv", newline="") as f:
        table = list(csv.reader(f))
    assert tuple(table[0]) == COLUMNS  # extras (count_histogram) stay in results.json only
    line = dict(zip(COLUMNS, table[1], strict=True))
    assert line["run_id"] == "full_s0" and line["knn_top1"] == "0.5" and line["linear_top1"] == ""
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize(("text", "match"), [("{not json", "not valid JSON"), ('{"a": 1}', "list of result rows")])
def test_load_rows_rejects_bad_files(tmp_path, text, match):
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_rows(tmp_path)


def test_count_histogram_and_run_counts(tmp_path):
    run = tmp_path / "runs" / "emp_r0.7_s0"
    run.mkdir(parents=True)
    (run / "pruning_table.csv").write_text("index,count\n0,2\n1,0\n2,2\n3,1\n")
    assert count_histogram(run / "pruning_table.csv") == [1, 1, 2]
    assert count_histogram(run / "absent.csv") == []
    (tmp_path / "empty.csv").write_text("index,count\n")
    assert count_histogram(tmp_path / "empty.csv") == []
    # The row's own histogram wins; without one the run folder's table is read.
    assert run_counts({"run_id": "emp_r0.7_s0", "count_histogram": [2, 0, 1]}, tmp_path) == [0, 0, 2]
    assert run_counts({"run_id": "emp_r0.7_s0"}, tmp_path) == [0, 1, 2, 2]
    assert run_counts({"run_id": "gone_s0"}, tmp_path) == []


def test_columns_carry_test_accuracy_and_the_selection_diagnostics():
    assert COLUMNS.index("test_top1") == COLUMNS.index("linear_top1") + 1
    assert COLUMNS[-6:] == ("loss_repeatability", "align_repeatability", "entropy_repeatability", "junk_kept_fraction",
                            "repeat_share", "distinct_unique")
    assert len(set(COLUMNS)) == len(COLUMNS)


def test_rows_written_before_the_new_keys_still_round_trip(tmp_path):
    old = {"run_id": "emp_r0.7_s0", "method": "emp", "knn_top1": 0.4, "linear_top1": 0.5}
    new = {**old, "run_id": "emp_r0.7_s1", "test_top1": 0.9, "loss_repeatability": 0.1, "junk_kept_fraction": 0.05}
    write_results(tmp_path, [old, new])
    assert load_rows(tmp_path) == [old, new]
    with open(tmp_path / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert table[0]["test_top1"] == table[0]["loss_repeatability"] == table[0]["junk_kept_fraction"] == ""
    line = table[1]
    assert (line["test_top1"], line["loss_repeatability"], line["junk_kept_fraction"]) == ("0.9", "0.1", "0.05")
    assert table[1]["align_repeatability"] == ""


def test_parse_run_id_inverts_run_id():
    for method, rate, seed in (("emp", 0.7, 2), ("random-dynamic", 0.25, 10), ("full", None, 0), ("emp-easy", 0.9, 4)):
        assert parse_run_id(run_id(method, rate, seed)) == (method, rate, seed)
