"""The analysis scripts under benchmarks/ whose numbers the benchmarks README quotes."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from ssl_emp.cli import main as cli_main
from ssl_emp.config import Config, save_config
from ssl_emp.data.junk import junk_indices
from tests.conftest import TINY
from tests.helpers import load_script

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str) -> ModuleType:
    return load_script(BENCHMARKS / f"{name}.py")


reliability = _script("signal_reliability")
summarize = _script("summarize_tune_emp")
class_balance = _script("class_balance")
junk_probe = _script("junk_probe")
compare_sweeps = _script("compare_sweeps")


def test_agreement_separates_a_repeatable_signal_from_noise():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(20_000, generator=gen), torch.randn(20_000, generator=gen)
    same = reliability.agreement(a, a)
    assert same["pearson"] == pytest.approx(1) and same["spearman"] == pytest.approx(1) and same["top30_overlap"] == 1
    assert reliability.agreement(a, -a)["spearman"] == pytest.approx(-1)
    unrelated = reliability.agreement(a, b)
    assert abs(unrelated["spearman"]) < 0.03 and unrelated["top30_overlap"] == pytest.approx(0.3, abs=0.02)
    half = reliability.agreement(a, a + b)  # corr(a, a + b) = 1/sqrt(2)
    assert half["pearson"] == pytest.approx(0.5**0.5, abs=0.02)


# SimCLR also returns each direction's loss (SCAN's signal); the script rates every signal a model returns.
@pytest.mark.slow
@pytest.mark.parametrize("algorithm, signals", [("simclr", ("loss", "align", "loss_12", "loss_21")),
                                                ("supervised", ("loss", "entropy"))])
def test_signal_reliability_on_a_tiny_run(tmp_path, algorithm, signals):
    run = tmp_path / "run"
    assert cli_main(["pretrain", "--output-dir", str(run), *TINY, "--epochs", "1", "--set", "eval.eval_every=0",
                     "--set", "data.train_subset=256", "--set", f"algorithm={algorithm}"]) == 0
    out = tmp_path / "rel.json"
    assert reliability.main(["--run", str(run), "--passes", "2", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 256 and result["batch_size"] == 64
    for stage in ("init", "final"):
        assert set(result[stage]) == set(signals)
        for signal in signals:
            r = result[stage][signal]
            assert -1 <= r["spearman"] <= 1 and 0 <= r["top30_overlap"] <= 1 and r["std_across_samples"] > 0
    assert reliability.main(["--run", str(tmp_path / "absent"), "--output", str(out)]) == 2


def test_summarize_tune_emp_pairs_by_seed(tmp_path):
    def folder(name: str, method: str, knn: list[float]) -> None:
        (tmp_path / name).mkdir()
        rows = [{"method": method, "seed": s, "knn_top1": k} for s, k in enumerate(knn)]
        (tmp_path / name / "results.json").write_text(json.dumps(rows))

    folder("random-dynamic", "random-dynamic", [0.30, 0.28])
    folder("emp_beta0.0", "emp", [0.31, 0.30])
    folder("emp_rho1.0", "emp", [0.29])
    assert summarize.main([str(tmp_path)]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert "| random-dynamic | 2 | 29.00 ± 1.41 |  | s0: 30.00, s1: 28.00 |" in text
    assert "| emp_beta0.0 | 2 | 30.50 ± 0.71 | +1.50 ± 0.71 |" in text
    assert "| emp_rho1.0 | 1 | 29.00 | -1.00 |" in text
    assert summarize.main([str(tmp_path / "absent")]) == 2


@pytest.mark.slow
def test_compare_throughput_reads_the_loop_rate_of_each_checkout(tmp_path):
    compare = _script("compare_throughput")
    root = BENCHMARKS.parent
    out = tmp_path / "cmp.json"
    args = ["--checkout", str(root), "--checkout", str(root), "--config", "configs/digits_simclr.yaml",
            "--set", "data.train_subset=256", "--set", "model.backbone_kwargs.channels=[8,16,32,64]",
            "--repeats", "1", "--output", str(out)]
    assert compare.main(args) == 0
    report = json.loads(out.read_text())
    (entry,) = report["checkouts"].values()  # the same checkout twice: one entry, two one-epoch samples
    assert len(entry["images_per_s"]) == 2 and all(v > 0 for v in entry["images_per_s"])
    assert report["ratio_new_over_old"] == pytest.approx(1.0)
    assert compare.main(["--checkout", str(root), "--config", "x", "--output", str(out)]) == 2


def _pruning_run(runs: Path, run_id: str, labels: list[int], counts: list[int], top1: float = 0.5) -> None:
    run = runs / run_id
    run.mkdir(parents=True)
    lines = ["index,count,loss,align,entropy,memory,last_epoch,label"]
    lines += [f"{i},{c},1.0,nan,nan,0.0,0,{y}" for i, (y, c) in enumerate(zip(labels, counts, strict=True))]
    (run / "pruning_table.csv").write_text("\n".join(lines) + "\n")
    (run / "summary.json").write_text(json.dumps({"knn_top1": top1, "test_top1": None}))


def test_class_balance_compares_visit_shares_with_image_shares(tmp_path, capsys):
    runs = tmp_path / "runs"
    labels = [0, 0, 0, 1]  # images: 3/4 class 0, 1/4 class 1
    _pruning_run(runs, "random-dynamic_r0.5_s0", labels, [2, 2, 2, 2])  # visits mirror the images
    _pruning_run(runs, "emp_r0.5_s0", labels, [1, 1, 0, 6])  # visits: 1/4 class 0, 3/4 class 1
    (tmp_path / "runs" / "emp_r0.5_s1").mkdir()  # unfinished run: no table, skipped
    _pruning_run(tmp_path / "runs_s34", "emp_r0.5_s3", labels, [1, 1, 0, 6])  # seeds split across folders
    out = tmp_path / "balance.json"
    assert class_balance.main([str(runs), str(tmp_path / "runs_s34"), "--out", str(out)]) == 0
    rows = {r["run_id"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"random-dynamic_r0.5_s0", "emp_r0.5_s0", "emp_r0.5_s3"}
    assert rows["random-dynamic_r0.5_s0"]["tv"] == pytest.approx(0.0)
    emp = rows["emp_r0.5_s0"]
    assert (emp["method"], emp["rate"], emp["seed"]) == ("emp", 0.5, 0)
    assert emp["tv"] == pytest.approx(0.5)  # 0.5 * (|1/4 - 3/4| + |3/4 - 1/4|)
    assert emp["max_ratio"] == pytest.approx(3.0) and emp["min_ratio"] == pytest.approx(1 / 3)
    assert "| emp | 0.5 | 2 | 50.00 ± 0.00 |" in capsys.readouterr().out


def test_class_balance_rejects_a_folder_without_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        class_balance.main([str(tmp_path)])
    assert err.value.code == 2 and "no finished run" in capsys.readouterr().err


def _junk_run(runs: Path, run_id: str, inject: float, shares: list[float], n: int = 40) -> set[int]:
    """A finished run whose junk images were trained 5 times at loss 1.0, the clean ones once at 3.0."""
    run = runs / run_id
    run.mkdir(parents=True)
    cfg = Config()
    cfg.data.inject_noise = inject
    save_config(cfg, run / "config.yaml")
    junk = set(junk_indices(n, inject).tolist()) if inject else set()
    lines = ["index,count,loss,align,entropy,memory,last_epoch,label"]
    lines += [f"{i},5,1.0,0.9,nan,0.5,0,0" if i in junk else f"{i},1,3.0,0.6,nan,0.1,0,0" for i in range(n)]
    (run / "pruning_table.csv").write_text("\n".join(lines) + "\n")
    records = [{"epoch": -1, "knn_top1": 0.2}] + [{"epoch": e, "pruning/junk_kept_fraction": f} for e, f in enumerate(shares)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "summary.json").write_text(json.dumps({"knn_top1": 0.3}))
    return junk


def test_junk_probe_separates_junk_from_clean_images_by_the_runs_own_junk_set(tmp_path, capsys):
    runs = tmp_path / "runs"
    junk = _junk_run(runs, "emp_r0.5_s0", 0.25, [0.25, 0.1, 0.05])
    _junk_run(runs, "emp_r0.5_s1", 0.25, [0.25, 0.2, 0.15])
    _junk_run(runs, "full_s0", 0.0, [])  # no junk injected: not a probe run, skipped
    (runs / "ucb_r0.5_s0").mkdir()  # unfinished: skipped
    out = tmp_path / "junk.json"
    assert junk_probe.main([str(runs), "--out", str(out)]) == 0
    rows = {r["run_id"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"emp_r0.5_s0", "emp_r0.5_s1"} and len(junk) == 10
    r = rows["emp_r0.5_s0"]
    assert (r["method"], r["rate"], r["seed"], r["injected"]) == ("emp", 0.5, 0, 0.25)
    assert r["junk_kept_by_epoch"] == [0.25, 0.1, 0.05]
    assert (r["count_junk"], r["count_clean"], r["loss_junk"], r["loss_clean"]) == (5, 1, 1.0, 3.0)
    assert "| emp | 0.5 | 2 | 25.0 ± 0.0 | 5.00 ± 0.00 / 1.00 ± 0.00 | 1.00 ± 0.00 / 3.00 ± 0.00 |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as err:
        junk_probe.main([str(tmp_path / "runs" / "ucb_r0.5_s0")])
    assert err.value.code == 2 and "no finished junk-probe run" in capsys.readouterr().err


def test_compare_sweeps_pairs_a_method_of_one_sweep_with_another_by_seed(tmp_path, capsys):
    def sweep(name: str, method: str, knn: dict[tuple[float, int], float], base: dict) -> str:
        folder = tmp_path / name
        folder.mkdir()
        rows = [{"run_id": f"{method}_r{r:g}_s{s}", "method": method, "target_rate": r, "seed": s, "knn_top1": k}
                for (r, s), k in knn.items()]
        (folder / "results.json").write_text(json.dumps(rows))
        (folder / "benchmark.json").write_text(json.dumps({"base": base}))
        return str(folder)

    ours = sweep("beta", "emp", {(0.7, 0): 0.32, (0.7, 1): 0.31, (0.7, 2): 0.30, (0.9, 5): 0.2}, {"epochs": 80})
    ref = sweep("main", "random-dynamic", {(0.7, 0): 0.30, (0.7, 1): 0.30, (0.9, 0): 0.25}, {"epochs": 80})
    out = tmp_path / "cmp.md"
    assert compare_sweeps.main([f"{ours}:emp", f"{ref}:random-dynamic", "--label", "EMP b", "--out", str(out)]) == 0
    text = out.read_text()
    # seeds 0 and 1 pair at r = 0.7 (seed 2 has no partner); r = 0.9 shares no seed: no row
    assert "| 0.7 | 0, 1 | 31.50 ± 0.71 | 30.00 ± 0.00 | +1.50 ± 0.71 | [-4.85, +7.85] |" in text
    assert "| 0.9 |" not in text and text == capsys.readouterr().out
    other = sweep("other", "random-dynamic", {(0.7, 0): 0.3}, {"epochs": 10})
    for args, message in (([f"{ours}:emp", f"{other}:random-dynamic"], "different base configs"),
                          ([f"{ours}:ucb", f"{ref}:random-dynamic"], "no finished run of 'ucb'"),
                          ([ours, f"{ref}:random-dynamic"], "expected DIR:METHOD"),
                          ([f"{ours}:*", f"{ref}:random-dynamic"], "use it on both sides")):
        with pytest.raises(SystemExit) as err:
            compare_sweeps.main(args)
        assert err.value.code == 2 and message in capsys.readouterr().err
    # The same method across two configs (junk vs clean, say): asked for, and the difference said.
    junk = sweep("junk", "random-dynamic", {(0.7, 0): 0.33, (0.7, 1): 0.34}, {"epochs": 10})
    assert compare_sweeps.main([f"{junk}:*", f"{ref}:*", "--across-configs"]) == 0
    text = capsys.readouterr().out
    assert "differ in epochs (80 -> 10)" in text and "--across-configs`" in text
    assert "| random-dynamic | 0.7 | 0, 1 | 33.50 ± 0.71 | 30.00 ± 0.00 | +3.50 ± 0.71 |" in text


def test_curate_planted_scores_groups_whichever_member_survives():
    planted = _script("curate_planted")
    unique_of = np.array([0, 1, 2, 0, 0, 1])  # image 0 three times, image 1 twice, image 2 once
    # Keeping a copy instead of the original is as right as the other way round.
    copy_kept = planted.score(np.array([1, 0, 0, 0, 1, 1], dtype=bool), unique_of)
    original_kept = planted.score(np.array([0, 0, 0, 1, 1, 1], dtype=bool), unique_of)
    assert copy_kept == original_kept and copy_kept["precision"] == 1 and copy_kept["recall"] == 1
    over = planted.score(np.array([1, 0, 0, 1, 1, 0], dtype=bool), unique_of)  # the whole group of 0 gone
    assert over["precision"] == 2 / 3 and over["recall"] == 2 / 3
