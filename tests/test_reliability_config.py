"""Config input that is hostile or merely odd, where users meet it: every YAML file the CLI reads
(a pretrain config, a benchmark config, a run folder's config.yaml), model sizes that cannot be
allocated, and a ``Config`` built in Python for ``pretrain(cfg)``. Each is one line and exit 2 (or
a ConfigError) before anything is written, or is accepted where it means the obvious thing."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import yaml

from ssl_emp.cli import main
from ssl_emp.config import MAX_YAML_BYTES, load_config
from ssl_emp.errors import ConfigError
from ssl_emp.run.layout import RunLayout
from ssl_emp.train import pretrain as pretrain_api
from tests.helpers import CONFIGS
from tests.reliability_helpers import FAST, one_line, pretrain


def _alias_bomb(indent: str, levels: int = 5, width: int = 9) -> str:
    """``levels`` anchors, each a list of ``width`` aliases of the one before: width**levels values
    in a few hundred bytes (the issue's bomb had more levels; refusing does not depend on that)."""
    lines = [f"{indent}l0: &l0 [{', '.join(['1'] * width)}]"]
    lines += [f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _bench_text(extra: str) -> str:
    grid = {"methods": ["full"], "rates": [0.0], "seeds": [0]}
    return yaml.safe_dump({"base": str(CONFIGS / "digits_simclr.yaml"), "grid": grid, "linear_probe": False}) + extra


# ----------------------------------------------------------------------------- YAML aliases and size


def test_an_alias_bomb_in_a_pretrain_config_is_one_short_line(tmp_path, tiny_args, capsys):
    config = tmp_path / "bomb.yaml"
    config.write_text("model:\n  backbone_kwargs:\n" + _alias_bomb("    "))
    assert pretrain(tmp_path / "run", tiny_args, "--config", str(config)) == 2
    err = one_line(capsys)
    assert "aliases (*l0) are not allowed" in err and str(config) in err and len(err) < 300, err[:300]
    assert not (tmp_path / "run").exists()


def test_an_alias_bomb_in_a_benchmark_config_is_one_short_line(tmp_path, capsys):
    config = tmp_path / "bench.yaml"
    config.write_text(_bench_text("overrides:\n  model:\n    backbone_kwargs:\n" + _alias_bomb("      ")))
    assert main(["benchmark", "--config", str(config), "--output-dir", str(tmp_path / "out")]) == 2
    err = one_line(capsys)
    assert "benchmark config" in err and "aliases (*l0) are not allowed" in err and len(err) < 300, err[:300]
    assert not (tmp_path / "out").exists()


def test_an_alias_bomb_in_a_run_folders_config_yaml_is_refused_on_resume(tmp_path, capsys):
    run = RunLayout(tmp_path / "run")
    run.dir.mkdir()
    run.config.write_text("model:\n  backbone_kwargs:\n" + _alias_bomb("    "))
    before = sorted(p.name for p in run.dir.iterdir())
    assert main(["pretrain", "--output-dir", str(run.dir), "--resume", "--no-progress"]) == 2
    err = one_line(capsys)
    assert str(run.config) in err and "aliases (*l0) are not allowed" in err and len(err) < 300, err[:300]
    assert sorted(p.name for p in run.dir.iterdir()) == before


@pytest.mark.parametrize(
    "text, message",
    [
        ("epochs: " + "[" * 5000 + "]" * 5000 + "\n", "nests more than 64 levels deep"),
        ("model:\n  queue_size: " + "9" * 5000 + "\n", "Exceeds the limit (4300 digits)"),
        ("# padding\n" * (MAX_YAML_BYTES // 10 + 1) + "epochs: 0\n", "is larger than 1024 KiB: not a config file"),
    ],
    ids=["deep", "huge-integer", "oversized"],
)
def test_yaml_that_would_exhaust_the_parser_is_one_line(tmp_path, tiny_args, capsys, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert pretrain(tmp_path / "run", tiny_args, "--config", str(config)) == 2
    assert message in one_line(capsys)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- files that are not UTF-8


def test_a_pretrain_config_that_is_not_utf8_is_one_line(tmp_path, tiny_args, capsys):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("epochs: 1\n# caf\u00e9\n".encode("latin-1"))
    assert pretrain(tmp_path / "run", tiny_args, "--config", str(config)) == 2
    assert one_line(capsys) == (f"ssl-emp: error: config file {config} is not UTF-8 text (byte 0xe9 at offset 15); "
                                "save it as UTF-8")
    assert not (tmp_path / "run").exists()


def test_a_benchmark_config_that_is_not_utf8_is_one_line(tmp_path, capsys):
    config = tmp_path / "bench.yaml"
    config.write_bytes(_bench_text("# caf\u00e9\n").encode("latin-1"))
    assert main(["benchmark", "--config", str(config), "--output-dir", str(tmp_path / "out")]) == 2
    assert f"benchmark config {config} is not UTF-8 text (byte 0xe9" in one_line(capsys)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- model sizes


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "algorithm=moco", "--set", "model.queue_size=1000000000000"],
         "model.queue_size must be an integer in [1, 1048576], got 1000000000000"),
        (["--set", "model.proj_hidden_dim=100000000000"], "model.proj_hidden_dim must be an integer in [1, 16384]"),
        (["--set", "model.proj_out_dim=100000000000"], "model.proj_out_dim must be an integer in [1, 16384]"),
    ],
)
def test_model_sizes_that_cannot_be_allocated_are_one_line_exit_2(tmp_path, tiny_args, capsys, extra, message):
    assert pretrain(tmp_path / "run", tiny_args, *FAST, *extra) == 2
    assert message in one_line(capsys)
    assert not (tmp_path / "run").exists()


def test_the_moco_queue_is_limited_as_a_whole():
    # Each key in range, their product (the queue's floats) not: refused by validation, nothing allocated.
    with pytest.raises(ConfigError, match=r"model.queue_size x model.proj_out_dim must be <= 268435456 .*"
                                          r"got 1048576 x 512"):
        load_config(None, ["algorithm=moco", "model.queue_size=1048576", "model.proj_out_dim=512"])
    assert load_config(None, ["algorithm=moco", "model.queue_size=65536"]).model.queue_size == 65536


# ----------------------------------------------------------------------------- the Python API


def _api_config(out: pathlib.Path):
    return load_config(None, ["data.image_size=16", "model.backbone_kwargs.channels=[8,16,32,64]",
                              "model.proj_hidden_dim=64", "model.proj_out_dim=32", "data.train_subset=128",
                              "eval.eval_every=0", "eval.knn_k=20", "epochs=2", "progress=false",
                              f"output_dir={out}"])


@pytest.mark.slow
def test_paths_and_numpy_numbers_mean_what_they_say(tmp_path):
    out = tmp_path / "run"
    cfg = _api_config(out)
    cfg.output_dir = out  # a pathlib.Path
    cfg.epochs, cfg.optim.batch_size, cfg.optim.lr = np.int64(1), np.int32(64), np.float32(0.25)
    cfg.augment.mean = np.full(3, 0.5)
    pretrain_api(cfg)
    saved = yaml.safe_load(RunLayout(out).config.read_text())
    assert saved["output_dir"] == str(out) and saved["epochs"] == 1 and saved["optim"]["batch_size"] == 64
    assert saved["augment"]["mean"] == [0.5, 0.5, 0.5]
    assert RunLayout(out).final.is_file()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda cfg: setattr(cfg, "data", {"dataset": "digits"}),
         r"cfg.data must be an ssl_emp.config.DataConfig, got dict"),
        (lambda cfg: setattr(cfg, "eval", None), r"cfg.eval must be an ssl_emp.config.EvalConfig, got NoneType"),
        (lambda cfg: setattr(cfg, "output_dir", 3), r"output_dir must be a string, got 3"),
    ],
    ids=["dict-section", "none-section", "int-path"],
)
def test_a_config_edited_in_python_is_checked_before_anything_is_written(tmp_path, edit, message):
    out = tmp_path / "run"
    cfg = _api_config(out)
    edit(cfg)
    with pytest.raises(ConfigError, match=message):
        pretrain_api(cfg)
    assert not out.exists()


@pytest.mark.parametrize(
    "sinks, message",
    [
        ([object()], r"sinks\[0\] \(object\) is not a metrics sink: it lacks step, epoch, histogram, close"),
        (object(), r"sinks must be a list of metrics sinks, got object"),
    ],
    ids=["not-a-sink", "not-a-list"],
)
def test_a_non_sink_is_refused_before_anything_is_written(tmp_path, sinks, message):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        pretrain_api(_api_config(out), sinks=sinks)
    assert not out.exists()

