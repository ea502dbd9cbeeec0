"""Benchmark folders that always hold one data set and rows that describe what ran (issue 30: items
4-9, 15, 20): the data compared by fingerprint, not path, by the benchmark and by --resume; run
names that cannot collide; rates checked for every method; rows checked before they are merged;
results.csv rebuilt from results.json; nothing written before every check passes."""

from __future__ import annotations

import json
import math
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from ssl_emp.data import cache
from tests.helpers import bench_file, benchmark, forbid_training, results, split_sweep
from tests.reliability_helpers import one_line, pretrain
from tests.test_data import _write_tree

GRID = {"methods": ["full", "eps-greedy"], "rates": [0.5], "seeds": [0]}
TINY_DATA = {"epochs": 1, "data": {"train_subset": 128}, "optim": {"batch_size": 32}, "eval": {"eval_every": 0, "knn_k": 20}}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A finished two-run digits sweep (1 epoch, no linear probe) and its benchmark file."""
    root = tmp_path_factory.mktemp("sweep")
    assert benchmark(bench_file(root, GRID, **TINY_DATA), root / "out") == 0
    return root


@pytest.fixture
def copy_of(sweep, tmp_path) -> Path:
    """A private copy of the sweep folder; its benchmark file is ``copy_of.parent / 'bench.yaml'``."""
    shutil.copy(sweep / "bench.yaml", tmp_path)
    return Path(shutil.copytree(sweep / "out", tmp_path / "out"))


def _bench(out: Path, *extra: str) -> int:
    return benchmark(out.parent / "bench.yaml", out, *extra)


# ----------------------------------------------------------------------------- item 4: the data by fingerprint


def _folder_bench(tmp_path: Path) -> Path:
    overrides = {"epochs": 1, "data": {"dataset": "imagefolder", "cache_dir": str(tmp_path / "cache")},
                 "optim": {"batch_size": 4}, "eval": {"eval_every": 0, "knn_k": 3}}
    return bench_file(tmp_path, {"methods": ["full"], "seeds": [0]}, **overrides)


def _trees(tmp_path: Path) -> tuple[Path, Path]:
    """Two image folders of the same classes and file names with other images."""
    one, two = tmp_path / "one", tmp_path / "two"
    _write_tree(one, per_class=4, size=12)
    _write_tree(two, per_class=4, size=13)
    return one, two


@pytest.mark.slow
def test_a_benchmark_folder_holds_one_data_set_wherever_it_lies(tmp_path, monkeypatch, capsys):
    config, (one, two) = _folder_bench(tmp_path), _trees(tmp_path)
    out = tmp_path / "out"
    assert benchmark(config, out, "--set", f"data.data_dir={one}") == 0
    plan = json.loads((out / "benchmark.json").read_text())
    summary = json.loads((out / "runs" / "full_s0" / "summary.json").read_text())
    assert plan["data_fingerprint"] == summary["data_fingerprint"]
    forbid_training(monkeypatch)
    capsys.readouterr()
    # Other images under the same names: refused, into the same folder and as a merge.
    assert benchmark(config, out, "--set", f"data.data_dir={two}") == 2
    assert "the data (fingerprint" in one_line(capsys)
    assert benchmark(config, tmp_path / "merged", "--set", f"data.data_dir={two}", "--merge-from", str(out)) == 2
    assert "--merge-from" in (err := one_line(capsys)) and "the data (fingerprint" in err
    assert results(out)[0]["run_id"] == "full_s0" and not (tmp_path / "merged" / "benchmark.json").exists()
    # The same images moved elsewhere: the same benchmark.
    moved = Path(shutil.move(one, tmp_path / "moved"))
    assert benchmark(config, out, "--set", f"data.data_dir={moved}") == 0
    assert "1 done, 0 to run" in capsys.readouterr().out


def test_resume_accepts_a_moved_data_folder_and_refuses_other_data(tmp_path, tiny_args, capsys):
    one, two = _trees(tmp_path)
    args = ["--set", "data.dataset=imagefolder", "--set", "optim.batch_size=4", "--set", "eval.eval_every=0",
            "--set", "eval.knn_k=3", "--set", f"data.cache_dir={tmp_path / 'cache'}", "--epochs", "1"]
    assert pretrain(tmp_path / "run", tiny_args, *args, "--data-dir", str(one)) == 0
    moved = Path(shutil.move(one, tmp_path / "moved"))
    capsys.readouterr()
    assert pretrain(tmp_path / "run", tiny_args, *args, "--data-dir", str(moved), "--resume") == 0
    assert pretrain(tmp_path / "run", tiny_args, *args, "--data-dir", str(two), "--resume") == 2
    assert "--resume on other data than" in one_line(capsys)
    shutil.rmtree(moved)
    shutil.copytree(two, moved)  # other images where the trained-on folder was
    assert pretrain(tmp_path / "run", tiny_args, *args, "--data-dir", str(moved), "--resume") == 2
    assert "the data (fingerprint" in one_line(capsys)


def _tar(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="data")
    return archive


def test_resume_accepts_a_copy_of_the_archive_and_refuses_another_archive(tmp_path, tiny_args, monkeypatch, capsys):
    """An archive is identified by its bytes: a copy (a new mtime, as a download or ``cp`` gives) is the
    same data set, another archive under the same name is not."""
    monkeypatch.setattr(cache, "DIGEST_DIR", tmp_path / "digests")
    one, two = _trees(tmp_path)
    archive = _tar(one, tmp_path / "data.tar.gz")
    args = ["--set", "data.dataset=imagefolder", "--set", "optim.batch_size=4", "--set", "eval.eval_every=0",
            "--set", "eval.knn_k=3", "--set", f"data.cache_dir={tmp_path / 'cache'}", "--epochs", "1"]
    assert pretrain(tmp_path / "run", tiny_args, *args, "--data-dir", str(archive)) == 0
    copy = tmp_path / "copy" / "data.tar.gz"
    copy.parent.mkdir()
    shutil.copyfile(archive, copy)
    os.utime(copy, ns=(archive.stat().st_atime_ns, archive.stat().st_mtime_ns + 10**12))
    capsys.readouterr()
    assert pretrain(tmp_path / "run", tiny_args, *args, "--data-dir", str(copy), "--resume") == 0
    _tar(two, copy)  # other images where the trained-on archive was
    assert pretrain(tmp_path / "run", tiny_args, *args, "--data-dir", str(copy), "--resume") == 2
    assert "the data (fingerprint" in one_line(capsys)


# ----------------------------------------------------------------------------- items 5 and 9: names and rates


def test_two_rates_never_share_a_run(tmp_path, monkeypatch, capsys):
    forbid_training(monkeypatch)
    config = bench_file(tmp_path, {"methods": ["random-dynamic"], "rates": [0.5, 0.5000001], "seeds": [0]})
    assert benchmark(config, tmp_path / "out", "--dry-run") == 0
    ids = [line.split()[1] for line in capsys.readouterr().out.strip().splitlines()[1:]]
    assert ids == ["random-dynamic_r0.5_s0", "random-dynamic_r0.5000001_s0"]


@pytest.mark.parametrize("rate", [-1.5, 3, 0, 1, math.nan, math.inf])
def test_shorter_rates_outside_0_1_are_one_line_exit_2(tmp_path, monkeypatch, capsys, rate):
    forbid_training(monkeypatch)
    config = bench_file(tmp_path, {"methods": ["shorter"], "rates": [rate], "seeds": [0]})
    assert benchmark(config, tmp_path / "out", "--dry-run") == 2
    assert "grid.rates" in one_line(capsys) and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- item 6: rows describe what ran


@pytest.mark.slow
@pytest.mark.parametrize("legacy", [False, True])
def test_changed_method_params_never_reuse_rows_of_the_old_ones(copy_of, monkeypatch, capsys, legacy):
    shutil.rmtree(copy_of / "runs")  # supported: the rows carry everything the report needs
    if legacy:  # rows written before rows recorded their params: benchmark.json's are theirs
        (copy_of / "results.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "pruning_params"}
                                                       for r in results(copy_of)]))
    before = (copy_of / "results.json").read_text(), (copy_of / "benchmark.json").read_text()
    forbid_training(monkeypatch)
    assert _bench(copy_of, "--set", "grid.method_params.eps-greedy.epsilon=0.3") == 2
    assert "eps-greedy_r0.5_s0 trained with pruning params" in one_line(capsys)
    assert ((copy_of / "results.json").read_text(), (copy_of / "benchmark.json").read_text()) == before


@pytest.mark.slow
def test_turning_the_linear_probe_on_probes_the_finished_runs(copy_of, capsys):
    assert all(r["linear_top1"] is None for r in results(copy_of))
    assert _bench(copy_of, "--set", "linear_probe=true") == 0
    assert "0 done, 2 to run" in capsys.readouterr().out
    assert all(0 < r["linear_top1"] <= 1 for r in results(copy_of))
    assert json.loads((copy_of / "benchmark.json").read_text())["linear_probe"] is True


@pytest.mark.slow
def test_the_linear_probe_without_run_folders_is_one_line_exit_2(copy_of, monkeypatch, capsys):
    shutil.rmtree(copy_of / "runs")
    forbid_training(monkeypatch)
    assert _bench(copy_of, "--set", "linear_probe=true") == 2
    assert "has no linear result" in one_line(capsys)
    assert json.loads((copy_of / "benchmark.json").read_text())["linear_probe"] is False


# ----------------------------------------------------------------------------- item 7: results.csv


@pytest.mark.slow
@pytest.mark.parametrize("spoil", ["missing", "stale"])
def test_a_missing_or_stale_results_csv_is_rebuilt(copy_of, monkeypatch, spoil):
    csv = copy_of / "results.csv"
    whole = csv.read_text()
    if spoil == "missing":
        csv.unlink()
    else:  # killed between the results.json and results.csv writes: one row short
        csv.write_text("".join(whole.splitlines(keepends=True)[:2]))
    forbid_training(monkeypatch)
    assert _bench(copy_of) == 0
    assert csv.read_text() == whole


# ----------------------------------------------------------------------------- items 8, 15, 20: --merge-from


def _part(copy_of: Path, tmp_path: Path) -> Path:
    """The eps-greedy row moved into a second folder of the same sweep."""
    other = tmp_path / "other"
    split_sweep(copy_of, other, lambda r: r["method"] == "eps-greedy")
    return other


def _edit_rows(folder: Path, change) -> None:
    rows = results(folder)
    change(rows[0])
    (folder / "results.json").write_text(json.dumps(rows))


@pytest.mark.slow
@pytest.mark.parametrize("spoil, message", [
    (lambda o: _edit_rows(o, lambda r: r.pop("knn_top1")), "has no knn_top1"),
    (lambda o: _edit_rows(o, lambda r: r.pop("achieved_rate")), "has no achieved_rate"),
    (lambda o: _edit_rows(o, lambda r: r.update(knn_top1="0.9")), "has knn_top1 \"0.9\", not a number"),
    (lambda o: _edit_rows(o, lambda r: r.update(seed=0.5)), "not an integer"),
    (lambda o: (o / "benchmark.json").write_text((o / "benchmark.json").read_text()[:200]), "not valid JSON"),
    (lambda o: (o / "benchmark.json").write_text("[]"), "not a benchmark plan"),
])
def test_merge_from_a_bad_folder_is_one_line_exit_2_and_writes_nothing(copy_of, tmp_path, monkeypatch, capsys,
                                                                        spoil, message):
    other = _part(copy_of, tmp_path)
    spoil(other)
    before = {p.name: p.read_bytes() for p in copy_of.iterdir() if p.is_file()}
    forbid_training(monkeypatch)
    assert _bench(copy_of, "--merge-from", str(other)) == 2
    err = one_line(capsys)
    assert "--merge-from" in err and message in err, err
    assert {p.name: p.read_bytes() for p in copy_of.iterdir() if p.is_file()} == before
    # A new folder: nothing written either
    assert _bench(tmp_path / "new", "--merge-from", str(other)) == 2
    assert not (tmp_path / "new" / "benchmark.json").exists()


@pytest.mark.slow
def test_a_refused_merge_leaves_the_folder_free_for_the_intended_command(copy_of, tmp_path, monkeypatch, capsys):
    new = tmp_path / "new"
    forbid_training(monkeypatch)
    assert _bench(new, "--set", "epochs=2", "--merge-from", str(copy_of)) == 2
    assert "epochs (1 -> 2)" in one_line(capsys)
    assert _bench(new, "--merge-from", str(copy_of)) == 0
    assert "2 done, 0 to run" in capsys.readouterr().out
    assert [r["run_id"] for r in results(new)] == ["full_s0", "eps-greedy_r0.5_s0"]
