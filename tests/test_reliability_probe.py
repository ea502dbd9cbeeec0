"""Issue 24's hostile-user probe: each case ends in one line on stderr and its documented exit code
(2 for bad input, 1 for a failure of the machine), never in a traceback or a wrong result."""

from __future__ import annotations

import errno
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError

from ssl_emp.benchmark.report import main as report_main
from ssl_emp.benchmark.results import load_rows
from ssl_emp.benchmark.sweep import _write_plan, expand_grid, load_benchmark, merged_rows
from ssl_emp.cli import main
from ssl_emp.config import Config
from ssl_emp.data.fingerprint import data_fingerprint
from ssl_emp.errors import ConfigError
from ssl_emp.models import build_backbone, load_backbone
from tests.helpers import benchmark, forbid_training
from tests.reliability_helpers import one_line, pretrain

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMOKE = CONFIGS / "bench_digits_smoke.yaml"


def _fake_checkpoint(path: Path, edit=None) -> Path:
    """A checkpoint of an untrained tiny backbone (no training: fast); ``edit`` changes its state."""
    cfg = Config()
    cfg.model.backbone_kwargs = {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}
    model = build_backbone(cfg.model.backbone, cfg.model.cifar_stem, **cfg.model.backbone_kwargs)
    state = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    if edit is not None:
        edit(state)
    torch.save({"config": asdict(cfg), "epoch": 1, "model": state}, path)
    return path


def _export(tmp_path: Path) -> Path:
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(_fake_checkpoint(tmp_path / "fake.pt")), "--output", str(out)]) == 0
    return out


# ----------------------------------------------------------------------------- export onto a full disk


def test_export_onto_a_full_disk_is_one_line_exit_1(tmp_path, monkeypatch, capsys):
    ckpt = _fake_checkpoint(tmp_path / "fake.pt")
    out = tmp_path / "export"

    def disk_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    assert main(["export", "--checkpoint", str(ckpt), "--output", str(out)]) == 1
    assert one_line(capsys) == f"ssl-emp: error: cannot write export to {out}: no space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.pt"]  # no half export, no temp folder

    def io_error(tensors, filename, metadata=None):
        raise OSError(errno.EIO, "Input/output error", str(filename))

    monkeypatch.setattr(safetensors.torch, "save_file", io_error)
    assert main(["export", "--checkpoint", str(ckpt), "--output", str(out)]) == 1
    assert "Input/output error" in one_line(capsys)


def test_export_to_an_output_below_a_file_stays_bad_input(tmp_path, capsys):
    ckpt = _fake_checkpoint(tmp_path / "fake.pt")
    (tmp_path / "file").write_text("")
    assert main(["export", "--checkpoint", str(ckpt), "--output", str(tmp_path / "file" / "export")]) == 2
    assert f"cannot create {tmp_path / 'file'}" in one_line(capsys)


# ----------------------------------------------------------------------------- results.json rows


@pytest.mark.parametrize("rows, message", [
    ([{"run_id": "full_s0", "method": "full"}, {"method": "emp", "knn_top1": 0.5}], 'row 1 ({"method": "emp"'),
    ([{"run_id": "full_s0", "method": "full"}, {"method": "emp"}], "has no run_id"),
    ([{"run_id": 3, "method": "full"}], "row 0 ({\"run_id\": 3"),
    ([{"run_id": "full_s0"}], "has no method"),
    ([["full_s0", "full"]], 'row 0 (["full_s0", "full"]) is not a mapping'),
    ([5], "row 0 (5) is not a mapping"),
])
def test_results_rows_without_run_id_are_one_line(tmp_path, capsys, rows, message):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(ConfigError, match="results.json: row") as info:
        load_rows(tmp_path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert report_main([str(tmp_path)]) == 2
    assert message in one_line(capsys)


def test_benchmark_merge_from_a_folder_with_a_bad_row_is_one_line(tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    bench = load_benchmark(SMOKE)
    _write_plan(bench, expand_grid(bench, other), other, data_fingerprint(bench.base.data))
    (other / "results.json").write_text(json.dumps([{"method": "full", "knn_top1": 0.5}]))
    code = benchmark(SMOKE, tmp_path / "out", "--merge-from", str(other), "--dry-run")
    assert code == 2 and "row 0" in (err := one_line(capsys)) and "has no run_id" in err


# ----------------------------------------------------------------------------- merging an identical rerun


def _rows(**changes) -> list[dict]:
    rows = []
    for rid, method, rate in (("full_s0", "full", 0.0), ("random-dynamic_r0.5_s0", "random-dynamic", 0.5),
                              ("emp_r0.5_s0", "emp", 0.5)):
        rows.append({"run_id": rid, "method": method, "target_rate": rate, "achieved_rate": rate, "seed": 0,
                     "knn_top1": 0.5, "linear_top1": 0.6, "optimizer_steps": 20, "count_histogram": [0, 640],
                     "wall_time_s": 10.0, "train_time_s": 8.0, "eval_time_s": 1.0, "pruner_time_s": 0.1,
                     "linear_time_s": 2.0, "machine": "box-a", "versions": "torch=2.4", "device": "cpu", **changes})
    return rows


def _two_parts(tmp_path: Path, theirs: list[dict]) -> tuple:
    bench = load_benchmark(SMOKE)
    parts = []
    for name, rows in (("out", _rows()), ("rerun", theirs)):
        folder = tmp_path / name
        folder.mkdir()
        runs = expand_grid(bench, folder)
        _write_plan(bench, runs, folder, data_fingerprint(bench.base.data))
        (folder / "results.json").write_text(json.dumps(rows))
        parts.append(folder)
    return bench, runs, *parts


def test_merge_from_an_identical_rerun_with_other_timings_is_no_conflict(tmp_path, monkeypatch, capsys):
    forbid_training(monkeypatch)
    rerun = _rows(wall_time_s=12.5, train_time_s=9.0, eval_time_s=1.5, pruner_time_s=0.2, linear_time_s=2.5,
                  machine="box-b", versions="torch=2.5", device="cuda")
    bench, runs, out, other = _two_parts(tmp_path, rerun)
    code = benchmark(SMOKE, out, "--merge-from", str(other), "--dry-run")
    assert code == 0 and "3 runs (3 already in results.json)" in capsys.readouterr().out
    # The rows already in the output folder stay as they are, timings included (rows of an older
    # version are given the parameters the folder's benchmark.json records).
    merged = merged_rows(bench, runs, out, [other], data_fingerprint(bench.base.data))
    assert all("pruning_params" in row for row in merged)
    assert [{k: v for k, v in row.items() if k != "pruning_params"} for row in merged] == _rows()


@pytest.mark.parametrize("change, shown", [
    ({"knn_top1": 0.51}, "knn_top1 (0.5 -> 0.51)"),
    ({"count_histogram": [1, 639]}, "count_histogram ([0, 640] -> [1, 639])"),
    ({"wall_time_s": 99.0, "optimizer_steps": 21}, "optimizer_steps (20 -> 21)"),
])
def test_merge_from_still_refuses_a_run_with_other_results(tmp_path, capsys, change, shown):
    bench, runs, out, other = _two_parts(tmp_path, _rows(**change))
    code = benchmark(SMOKE, out, "--merge-from", str(other), "--dry-run")
    err = one_line(capsys)
    assert code == 2 and f"run full_s0 is also in {out} with different results: {shown}" in err
    assert "wall_time_s" not in err


# ----------------------------------------------------------------------------- config.json of an export


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(architecture=5), "'architecture' must be a timm model name, got 5"),
    (lambda c: c.pop("architecture"), "'architecture' must be a timm model name, got None"),
    (lambda c: c["ssl_emp"].update(cifar_stem="false"), "'ssl_emp.cifar_stem' must be true or false, got 'false'"),
    (lambda c: c.update(ssl_emp=["cifar_stem"]), "'ssl_emp' must be a mapping"),
    (lambda c: c.update(model_args=[1, 2]), "'model_args' must be a mapping, got [1, 2]"),
    (lambda c: c["model_args"].update(num_classes="0"), "'num_classes' must be a non-negative integer, got '0'"),
    (lambda c: c["model_args"].update(channels=[8, 16]), "model_args.channels must be 4 positive integers"),
])
def test_load_backbone_checks_the_types_of_config_json(tmp_path, edit, message):
    out = _export(tmp_path)
    config = json.loads((out / "config.json").read_text())
    edit(config)
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError) as info:
        load_backbone(out)
    assert message in str(info.value) and len(str(info.value).splitlines()) == 1


def test_load_backbone_of_a_json_list_or_a_file(tmp_path):
    out = _export(tmp_path)
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        load_backbone(out / "model.safetensors")
    (out / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="it holds a list, not a mapping"):
        load_backbone(out)


# ----------------------------------------------------------------------------- a folder where a file is expected


def test_eval_and_export_checkpoint_that_is_a_folder(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert main(["eval", "knn", "--checkpoint", str(run)]) == 2
    assert one_line(capsys) == f"ssl-emp: error: checkpoint {run} is a folder, not a file (pass the .pt file)"
    _fake_checkpoint(run / "checkpoints" / "final.pt")
    assert main(["eval", "knn", "--checkpoint", str(run)]) == 2
    assert f"(the run's final checkpoint is {run / 'checkpoints' / 'final.pt'})" in one_line(capsys)
    assert main(["export", "--checkpoint", str(run), "--output", str(tmp_path / "export")]) == 2
    assert "is a folder, not a file" in one_line(capsys)


def test_pretrain_config_that_is_a_folder(tmp_path, tiny_args, capsys):
    assert pretrain(tmp_path / "run", tiny_args, "--config", str(tmp_path)) == 2
    assert one_line(capsys) == f"ssl-emp: error: config file {tmp_path} is a folder, not a file (pass a .yaml file)"
    assert not (tmp_path / "run").exists()


def test_benchmark_config_that_is_a_folder(tmp_path, capsys):
    assert benchmark(tmp_path, tmp_path / "out") == 2
    assert one_line(capsys) == f"ssl-emp: error: benchmark config {tmp_path} is a folder, not a file (pass a .yaml file)"
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- weights that do not fit


def _drop(key: str):
    return lambda state: state.pop(key)


def _reshape(key: str):
    return lambda state: state.update({key: torch.zeros(3)})


@pytest.mark.parametrize("edit, message", [
    (_drop("backbone.layer2.0.conv1.weight"), "missing key 'layer2.0.conv1.weight'"),
    (lambda s: s.update({"backbone.extra.weight": torch.zeros(1)}), "unexpected key 'extra.weight'"),
    (lambda s: s.update({"backbone.fc.weight": torch.zeros(1), "backbone.fc.bias": torch.zeros(1)}),
     "unexpected key 'fc.weight' (and 1 more)"),
    (_reshape("backbone.bn1.weight"), "'bn1.weight' has shape [3] but the model's is [64]"),
    (lambda s: [s.pop(k) for k in list(s)], "missing key 'conv1.weight' (and"),
])
def test_eval_of_mismatched_weights_names_the_key(tmp_path, capsys, edit, message):
    ckpt = _fake_checkpoint(tmp_path / "bad.pt", edit)
    assert main(["eval", "knn", "--checkpoint", str(ckpt)]) == 2
    err = one_line(capsys)
    assert "does not match backbone 'resnet18'" in err and message in err


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("layer3.0.bn2.running_var"), "missing key 'layer3.0.bn2.running_var'"),
    (lambda s: s.update({"layer1.0.conv2.weight": torch.zeros(2, 2)}),
     "'layer1.0.conv2.weight' has shape [2, 2] but the model's is [8, 8, 3, 3]"),
])
def test_load_backbone_of_mismatched_weights_names_the_key(tmp_path, edit, message):
    out = _export(tmp_path)
    state = safetensors.torch.load_file(out / "model.safetensors")
    edit(state)
    safetensors.torch.save_file(state, out / "model.safetensors")
    with pytest.raises(ConfigError, match="does not hold the weights") as info:
        load_backbone(out)
    assert message in str(info.value) and len(str(info.value).splitlines()) == 1


# ----------------------------------------------------------------------------- k above the bank size


LOWERED = "ssl-emp: kNN k=200 is larger than the 61-image bank; using k=61"


@pytest.mark.slow
def test_pretrain_and_eval_both_lower_k_to_the_bank_and_say_so(tmp_path, tiny_args, capsys):
    run = tmp_path / "run"
    # Two evaluations (before training and at the end) with the default k=200 on a 61-image bank.
    assert pretrain(run, tiny_args, "--epochs", "1", "--set", "data.train_subset=61", "--set", "optim.batch_size=32",
                    "--set", "eval.eval_every=1") == 0
    err = capsys.readouterr().err
    assert err.count(LOWERED) == 1, err  # once per run, not once per evaluation
    summary = json.loads((run / "summary.json").read_text())
    result = tmp_path / "knn.json"
    assert main(["eval", "knn", "--checkpoint", str(run / "checkpoints" / "final.pt"), "--output", str(result)]) == 0
    assert one_line(capsys) == LOWERED
    knn = json.loads(result.read_text())
    assert knn["protocol"]["k"] == 61 and knn["num_train"] == 61
    assert knn["top1"] == pytest.approx(summary["knn_top1"])  # the same k, the same score as the monitor


@pytest.mark.parametrize("command", ["pretrain", "benchmark"])
def test_a_set_value_that_is_not_yaml_is_one_line(tmp_path, capsys, command):
    # The one --set parser (ssl_emp.config.parse_override) serves both commands.
    config = [] if command == "pretrain" else ["--config", str(CONFIGS / "bench_digits_smoke.yaml")]
    assert main([command, *config, "--output-dir", str(tmp_path / "out"), "--set", "optim.lr=[1,"]) == 2
    assert "--set optim.lr: the value is not valid YAML" in one_line(capsys)
    assert not (tmp_path / "out").exists()
