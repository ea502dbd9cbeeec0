"""`ssl-emp benchmark`: grid expansion, resumable runner, results files and the report."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

import ssl_emp.train
from ssl_emp.benchmark.report import group_cells, render_markdown, write_report
from ssl_emp.benchmark.report import main as report_main
from ssl_emp.benchmark.results import COLUMNS
from tests.helpers import CONFIGS, benchmark, forbid_training, results, split_sweep

SMOKE_IDS = ["full_s0", "random-dynamic_r0.5_s0", "emp_r0.5_s0"]
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None  # the `bench` extra; plots are skipped without it


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """The smoke grid run once, end to end, through the CLI."""
    out = tmp_path_factory.mktemp("bench") / "smoke"
    assert _bench(out) == 0
    return out


@pytest.fixture
def copy_of(smoke, tmp_path) -> Path:
    """A private copy of the finished smoke sweep (moved folders must keep working)."""
    return Path(shutil.copytree(smoke, tmp_path / "copy"))


def _bench(out: Path, *extra: str) -> int:
    return benchmark(CONFIGS / "bench_digits_smoke.yaml", out, *extra)


@pytest.mark.slow
def test_smoke_grid_writes_one_row_per_run_and_the_report(smoke):
    rows = results(smoke)
    assert [r["run_id"] for r in rows] == SMOKE_IDS
    with open(smoke / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == COLUMNS and [r["run_id"] for r in table] == SMOKE_IDS
    by_id = {r["run_id"]: r for r in rows}
    assert by_id["full_s0"]["achieved_rate"] == 0.0 and by_id["full_s0"]["target_rate"] == 0.0
    for rid in SMOKE_IDS[1:]:
        assert by_id[rid]["achieved_rate"] == pytest.approx(0.5, abs=0.05) and by_id[rid]["target_rate"] == 0.5
    for r in rows:
        assert 0 < r["knn_top1"] <= 1 and 0 < r["linear_top1"] <= 1 and r["epochs"] == 2 and r["num_samples"] == 640
        assert r["sample_visits"] == round((1 - r["achieved_rate"]) * 2 * 640) and "torch=" in r["versions"]
        assert (smoke / "runs" / r["run_id"] / "checkpoints" / "final.pt").is_file()
        hist = r["count_histogram"]  # samples trained 0, 1, 2 times: the row alone feeds the count plot
        assert sum(hist) == 640 and sum(c * n for c, n in enumerate(hist)) == r["sample_visits"]
    report = (smoke / "report.md").read_text()
    assert "| emp | 0.5 |" in report and "EMP vs random-dynamic" in report and "3 of 3 runs finished" in report
    for png in ("accuracy_vs_rate.png", "train_counts_r0.5.png", "wall_time_vs_rate.png") if HAVE_MPL else ():
        assert (smoke / png).stat().st_size > 1000 and f"({png})" in report


@pytest.mark.slow
def test_second_invocation_retrains_nothing(copy_of, monkeypatch, capsys):
    before = results(copy_of)
    stamps = {p: p.stat().st_mtime_ns for p in copy_of.glob("runs/*/checkpoints/*.pt")}
    forbid_training(monkeypatch)
    assert _bench(copy_of) == 0
    assert "3 done, 0 to run" in capsys.readouterr().out
    assert results(copy_of) == before
    assert {p: p.stat().st_mtime_ns for p in copy_of.glob("runs/*/checkpoints/*.pt")} == stamps


@pytest.mark.slow
def test_killed_sweep_reruns_only_the_missing_runs(copy_of, monkeypatch):
    original = {r["run_id"]: r for r in results(copy_of)}
    kept = [r for r in original.values() if r["run_id"] == "full_s0"]
    (copy_of / "results.json").write_text(json.dumps(kept))
    # random-dynamic was killed after its last epoch checkpoint (resumes); emp before it started.
    rd = copy_of / "runs" / "random-dynamic_r0.5_s0"
    for name in ("summary.json", "linear.json", "checkpoints/final.pt"):
        (rd / name).unlink()
    shutil.rmtree(copy_of / "runs" / "emp_r0.5_s0")

    real = ssl_emp.train.pretrain
    calls: list[tuple[str, bool]] = []

    def killed_on_second(cfg, resume=False):
        calls.append((Path(cfg.output_dir).name, resume))
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(cfg, resume=resume)

    monkeypatch.setattr(ssl_emp.train, "pretrain", killed_on_second)
    with pytest.raises(RuntimeError, match="killed"):
        _bench(copy_of)
    assert calls == [("random-dynamic_r0.5_s0", True), ("emp_r0.5_s0", False)]
    assert [r["run_id"] for r in results(copy_of)] == ["full_s0", "random-dynamic_r0.5_s0"]

    calls.clear()

    def recorded(cfg, resume=False):
        calls.append((Path(cfg.output_dir).name, resume))
        return real(cfg, resume=resume)

    monkeypatch.setattr(ssl_emp.train, "pretrain", recorded)
    assert _bench(copy_of) == 0
    assert calls == [("emp_r0.5_s0", False)]
    rows = results(copy_of)
    assert [r["run_id"] for r in rows] == SMOKE_IDS
    for r in rows:  # seeded runs and an exact resume reproduce the original numbers
        assert r["knn_top1"] == pytest.approx(original[r["run_id"]]["knn_top1"])
        assert r["achieved_rate"] == original[r["run_id"]]["achieved_rate"]


@pytest.mark.slow
def test_folder_of_a_different_config_is_refused(copy_of, monkeypatch, capsys):
    forbid_training(monkeypatch)
    assert _bench(copy_of, "--set", "epochs=3") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different" in err and "epochs (2 -> 3)" in err


@pytest.mark.slow
def test_plan_written_before_a_config_field_existed_still_resumes(copy_of, monkeypatch, capsys):
    # A sweep started by an older version has no entry for a field added since; at its default the
    # field changes nothing, so the folder is the same benchmark. A non-default value still differs.
    plan = json.loads((copy_of / "benchmark.json").read_text())
    del plan["base"]["data"]["val_fraction"]
    (copy_of / "benchmark.json").write_text(json.dumps(plan))
    forbid_training(monkeypatch)
    assert _bench(copy_of) == 0
    assert "3 done, 0 to run" in capsys.readouterr().out
    assert _bench(copy_of, "--set", "data.val_fraction=0.2") == 2
    assert "data.val_fraction (0.0 -> 0.2)" in capsys.readouterr().err


# 3 seeds x (full + infobatch + 6 methods x 4 rates, shorter included) = 78; the CPU grid adds shorter at
# InfoBatch's rate (0.2): 81.
@pytest.mark.parametrize("name, per_seed", [("bench_cifar10_cpu.yaml", 27), ("bench_cifar10_resnet18_gpu.yaml", 26)])
def test_dry_run_lists_the_whole_grid(tmp_path, monkeypatch, capsys, name, per_seed):
    forbid_training(monkeypatch)
    out = tmp_path / "never"
    assert benchmark(CONFIGS / name, out, "--dry-run") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"{3 * per_seed} runs")
    ids = [line.split()[1] for line in lines[1:]]
    assert len(ids) == len(set(ids)) == 3 * per_seed and not out.exists()
    assert ids[:2] == ["full_s0", "infobatch_s0"] and "emp_r0.7_s2" in ids and "full_r0_s0" not in ids
    assert "shorter_r0.7_s2" in ids
    seeds = [int(i.rsplit("_s", 1)[1]) for i in ids]
    assert seeds == sorted(seeds)  # seed-major: a partial sweep holds whole seeds
    # --set reaches the grid too: one seed
    assert benchmark(CONFIGS / name, out, "--dry-run", "--set", "grid.seeds=[1]",
                     "--set", "grid.method_params.emp.beta=0.5") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"{per_seed} runs") and all(line.split()[1].endswith("_s1") for line in lines[1:])


BASE = str(CONFIGS / "digits_simclr.yaml")


@pytest.mark.parametrize("body, message", [
    ({"base": BASE, "grid": {"methods": ["full"]}, "sweep": 1}, "unknown benchmark key 'sweep'"),
    ({"base": BASE, "grid": {"methods": ["full"], "rate": [0.5]}}, "unknown benchmark key 'grid.rate'"),
    ({"base": BASE, "grid": {"methods": ["emp", "magic"], "rates": [0.5]}}, "unknown pruning method 'magic'"),
    ({"base": BASE, "overrides": {"optim": {"lrr": 1}}, "grid": {"methods": ["full"]}}, "unknown config key 'optim.lrr'"),
    ({"base": BASE, "grid": {"methods": ["emp"], "rates": [1.5]}}, "pruning.rate must be in [0, 0.95]"),
    ({"base": BASE, "grid": {"methods": ["emp"], "rates": [0.5], "method_params": {"emp": {"bta": 1}}}}, "'bta'"),
    ({"base": "missing.yaml", "grid": {"methods": ["full"]}}, "base config not found"),
    ({"base": BASE, "grid": {"methods": ["emp"], "rates": [0.5], "method_rates": {"ucb": [0.5]}}},
     "grid.method_rates names 'ucb', which is not in grid.methods"),
    ({"base": BASE, "grid": {"methods": ["emp"], "rates": [0.5], "method_rates": {"emp": [0.7]}}},
     "rate 0.7, which is not in grid.rates"),
    ({"base": BASE, "grid": {"methods": ["full", "emp"], "rates": [0.5], "method_rates": {"full": [0.5]}}},
     "which takes no pruning rate"),
    ({"base": BASE, "grid": {"methods": ["emp"], "rates": [0.5], "method_rates": {"emp": []}}},
     "'grid.method_rates.emp' must be a non-empty list"),
])
def test_bad_benchmark_config_exits_2_with_one_line(tmp_path, monkeypatch, capsys, body, message):
    forbid_training(monkeypatch)
    import yaml

    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(body))
    assert benchmark(path, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and not (tmp_path / "out").exists()


def test_method_rates_restrict_a_method_to_some_rates(tmp_path):
    import yaml

    from ssl_emp.benchmark.sweep import expand_grid, load_benchmark

    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump({"base": BASE, "grid": {
        "methods": ["full", "emp", "emp-easy"], "rates": [0.5, 0.7, 0.9], "seeds": [0],
        "method_rates": {"emp-easy": [0.9, 0.7]}}}))
    bench = load_benchmark(path)
    assert bench.method_rates == {"emp-easy": [0.9, 0.7]}
    ids = [run.run_id for run in expand_grid(bench, tmp_path / "out")]
    assert ids == ["full_s0", "emp_r0.5_s0", "emp_r0.7_s0", "emp-easy_r0.7_s0", "emp_r0.9_s0", "emp-easy_r0.9_s0"]
    # --set reaches it like any grid key
    bench = load_benchmark(path, ["grid.method_rates.emp-easy=[0.5]"])
    assert [r.run_id for r in expand_grid(bench, tmp_path / "out") if r.method == "emp-easy"] == ["emp-easy_r0.5_s0"]


def _row(method, rate, seed, knn, linear=None, wall=100.0):
    return {"run_id": f"{method}_r{rate}_s{seed}", "method": method, "target_rate": rate,
            "achieved_rate": rate or 0.0, "seed": seed, "knn_top1": knn, "linear_top1": linear,
            "wall_time_s": wall, "optimizer_steps": 10, "machine": "m", "versions": "v"}


SYNTHETIC = [
    *(_row("full", 0.0, s, k, k + 0.05, 200) for s, k in enumerate([0.80, 0.82, 0.84])),
    *(_row("emp", 0.7, s, k, wall=70) for s, k in enumerate([0.78, 0.79, 0.80])),
    *(_row("random-dynamic", 0.7, s, k, wall=65) for s, k in enumerate([0.76, 0.78, 0.80])),
    _row("emp", 0.5, 0, 0.75),  # a partial cell: one seed so far
    *(_row("random-dynamic", 0.5, s, k) for s, k in enumerate([0.77, 0.79])),
]


def test_report_means_stds_best_and_emp_difference():
    text = render_markdown(SYNTHETIC)
    lines = {ln.split("|")[1].strip() + "@" + ln.split("|")[2].strip(): ln for ln in text.splitlines()
             if ln.startswith("| ") and ln.count("|") == 10}
    assert "82.00 ± 2.00" in lines["full@0"] and "87.00 ± 2.00" in lines["full@0"] and "1.000" in lines["full@0"]
    assert "**79.00 ± 1.00**" in lines["emp@0.7"] and "| 0.963 |" in lines["emp@0.7"]
    assert "| 78.00 ± 2.00 |" in lines["random-dynamic@0.7"]
    assert "**78.00 ± 1.41**" in lines["random-dynamic@0.5"]
    assert "| 75.00 |" in lines["emp@0.5"] and lines["emp@0.5"].rstrip().endswith("| 1 |")
    assert "At r = 0.7: emp kNN top-1 79.00 ± 1.00% (3 seeds) vs random-dynamic 78.00 ± 2.00% (3 seeds)" in text
    assert "difference +1.00 pp (paired over seeds: +1.00 ± 1.00 (n=3))" in text
    assert "| 0.5 | 75.00 | 78.00 ± 1.41 | -3.00 | -2.00 (n=1) |" in text
    cells = group_cells(SYNTHETIC)
    assert [(c.method, c.target_rate) for c in cells] == [
        ("full", 0.0), ("random-dynamic", 0.5), ("emp", 0.5), ("random-dynamic", 0.7), ("emp", 0.7)]


def test_report_compares_emp_with_every_baseline_and_tabulates_counts():
    hist = {"emp": [0, 2, 2], "eps-greedy": [1, 2, 0, 1]}  # samples trained 0, 1, 2, 3 times
    rows = [*SYNTHETIC, *(_row("eps-greedy", 0.7, s, k) for s, k in enumerate([0.77, 0.77, 0.77]))]
    rows = [{**r, "count_histogram": hist[r["method"]]} if r["method"] in hist and r["target_rate"] == 0.7 else r
            for r in rows]
    text = render_markdown(rows)
    assert "| target r | emp − random-dynamic | emp − eps-greedy |" in text
    assert "| 0.7 | +1.00 ± 1.00 (n=3) | +2.00 ± 1.00 (n=3) |" in text
    assert "| 0.5 | -2.00 (n=1) | — |" in text
    # emp: counts {1, 1, 2, 2} per seed; eps-greedy: {0, 1, 1, 3}; pooled over 3 seeds
    assert "| emp | 1.50 | 0.33 | 0.0 | 50.0 | 2 |" in text
    assert "| eps-greedy | 1.25 | 0.87 | 25.0 | 50.0 | 3 |" in text


@pytest.mark.slow
def test_report_from_a_partial_results_file(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(SYNTHETIC[:4]))  # full x3 + one emp seed
    assert report_main([str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "4 runs finished" in text and "| emp | 0.7 |" in text and "No rate has both" in text
    if HAVE_MPL:
        assert (tmp_path / "accuracy_vs_rate.png").is_file() and (tmp_path / "wall_time_vs_rate.png").is_file()
    assert not list(tmp_path.glob("train_counts_*.png"))  # no run folders: no count tables to plot
    assert report_main([str(tmp_path / "absent")]) == 2
    write_report(tmp_path)  # idempotent


def test_make_row_copies_test_accuracy_and_diagnostics_when_the_summary_has_them(tmp_path):
    from ssl_emp.benchmark.sweep import RunSpec, make_row
    from ssl_emp.config import Config

    run = RunSpec("emp_r0.7_s0", "emp", 0.7, 0, Config(output_dir=str(tmp_path)), Config().epochs)
    old = {"achieved_rate": 0.7, "knn_top1": 0.4, "wall_time_s": 1.0, "train_time_s": 0.5, "optimizer_steps": 3,
           "images_seen": 30, "epochs": 1, "num_samples": 100}
    row = make_row(run, old, None)  # a summary written before these keys existed
    assert all(row[k] is None for k in ("test_top1", "loss_repeatability", "align_repeatability",
                                        "entropy_repeatability", "junk_kept_fraction"))
    new = {**old, "test_top1": 0.9, "loss_repeatability": 0.1, "align_repeatability": None,
           "entropy_repeatability": 0.3, "junk_kept_fraction": 0.05}
    row = make_row(run, new, {"top1": 0.5, "top5": 0.9})
    assert (row["test_top1"], row["loss_repeatability"], row["align_repeatability"]) == (0.9, 0.1, None)
    assert (row["entropy_repeatability"], row["junk_kept_fraction"], row["linear_top1"]) == (0.3, 0.05, 0.5)
    assert set(COLUMNS) <= set(row)


def _split(copy_of: Path, tmp_path: Path, keep: set[str]) -> Path:
    """Move the rows not in ``keep`` into a second folder of the same sweep (rows and plan only)."""
    other = tmp_path / "other"
    split_sweep(copy_of, other, lambda r: r["run_id"] not in keep, reverse=True)
    return other


@pytest.mark.slow
def test_merge_from_joins_a_sweep_split_over_two_folders(copy_of, tmp_path, monkeypatch, capsys):
    original = results(copy_of)
    other = _split(copy_of, tmp_path, {"full_s0"})
    forbid_training(monkeypatch)
    assert _bench(copy_of, "--dry-run", "--merge-from", str(other)) == 0
    assert "3 already in results.json" in capsys.readouterr().out and len(results(copy_of)) == 1  # dry: no write
    for _ in range(2):  # a repeated merge changes nothing
        assert _bench(copy_of, "--merge-from", str(other)) == 0
        assert "3 done, 0 to run" in capsys.readouterr().out
        assert results(copy_of) == original  # every row, in plan order
        assert "3 of 3 runs finished" in (copy_of / "report.md").read_text()
    # A sub-grid pooled from the whole sweep takes only its own runs.
    sub = tmp_path / "sub"
    assert _bench(sub, "--set", "grid.methods=[full,emp]", "--merge-from", str(copy_of)) == 0
    assert "2 of 3 rows are runs of this grid" in capsys.readouterr().out
    assert [r["run_id"] for r in results(sub)] == ["full_s0", "emp_r0.5_s0"]


@pytest.mark.slow
@pytest.mark.parametrize("spoil, message", [
    (lambda other: (other / "benchmark.json").unlink(), "not a benchmark folder"),
    (lambda other: _edit(other / "benchmark.json", lambda p: p["base"].update(epochs=3)), "epochs (3 -> 2)"),
    (lambda other: _edit(other / "benchmark.json", lambda p: p["grid"]["method_params"].update({"random-dynamic": {"seed_offset": 1}})),
     "random-dynamic ran with grid.method_params {'seed_offset': 1}"),
    (lambda other: _edit(other / "results.json", lambda rows: rows[0].update(knn_top1=0.123)),
     "is also in"),
])
def test_merge_from_refuses_a_folder_of_another_sweep_with_one_line(copy_of, tmp_path, monkeypatch, capsys,
                                                                     spoil, message):
    other = _split(copy_of, tmp_path, {"full_s0", "emp_r0.5_s0"})
    if "also in" in message:  # the same run in both folders, with different numbers
        rows = results(other) + [r for r in results(copy_of) if r["run_id"] == "emp_r0.5_s0"]
        (other / "results.json").write_text(json.dumps(rows[::-1]))
    before = (copy_of / "results.json").read_text()
    spoil(other)
    forbid_training(monkeypatch)
    assert _bench(copy_of, "--merge-from", str(other)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert (copy_of / "results.json").read_text() == before  # nothing written is lost


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
