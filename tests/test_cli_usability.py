"""The command line explains itself: fast help, suggestions for a mistyped key, config files that work
from any folder, and a thread count that fits the cores this process may use."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from ssl_emp import runtime
from ssl_emp.cli import main
from ssl_emp.config import load_config
from tests.helpers import ROOT, child_env

HEAVY = ("torch", "timm", "faiss", "lightly", "kornia")


def test_top_level_help_imports_no_heavy_library():
    """``ssl-emp --help`` answers at once: no torch, timm or faiss before a subcommand needs them."""
    code = ("import sys\nfrom ssl_emp.cli import main\ncode = main(['--help'])\n"
            f"print(code, sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.splitlines()[-1] == "0 []", proc.stdout + proc.stderr
    assert "pretrain" in proc.stdout and "export" in proc.stdout


def test_subcommand_help_lists_its_options(capsys):
    assert main(["pretrain", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--no-progress" in out.split("\n\n")[0]  # in the synopsis
    assert "--threads N" in out and "emp" in out  # the methods, from the registry


@pytest.mark.parametrize("key, hint, section", [
    ("optim.lrr", "did you mean optim.lr?", "(optim keys: name, lr, weight_decay"),
    ("lr", "did you mean optim.lr?", "(top-level keys: algorithm, epochs"),
    ("data.datadir", "did you mean data.data_dir?", "(data keys: dataset, data_dir"),
])
def test_unknown_key_suggests_the_nearest(capsys, key, hint, section):
    assert main(["pretrain", "--set", f"{key}=0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"unknown config key '{key}'; {hint} {section}" in err and len(err.splitlines()) == 1, err


def test_input_paths_in_a_config_file_resolve_against_its_folder(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "configs"
    folder.mkdir()
    config = folder / "run.yaml"
    config.write_text(yaml.safe_dump({"output_dir": "runs/x",
                                      "data": {"dataset": "imagefolder", "data_dir": "images", "keep_file": "../k.txt"},
                                      "pruning": {"method": "semdedup", "rate": 0.5, "embeddings": "e.npy"}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(config)
    assert cfg.data.data_dir == str(folder / "images") and cfg.data.keep_file == str(tmp_path / "k.txt")
    assert cfg.pruning.embeddings == str(folder / "e.npy")
    assert cfg.output_dir == "runs/x"  # written, not read: relative to the current folder
    # the command line's paths stay relative to the current folder
    assert load_config(config, ["data.data_dir=mine"]).data.data_dir == "mine"
    # where users meet it: the run looks for the data beside its config
    assert main(["pretrain", "--config", str(config), "--output-dir", str(tmp_path / "out"), "--no-progress"]) == 2
    assert f"data dir not found: {folder / 'images'}" in capsys.readouterr().err


def test_default_threads_fit_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert runtime.default_threads() == cores
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # what the user (or torchrun) asked for wins
    assert runtime.default_threads() == 3


@pytest.mark.slow
def test_threads_are_applied_and_recorded(tmp_path, tiny_args, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--output-dir", str(out), "--epochs", "1", "--threads", "1", *tiny_args,
                 "--set", "data.train_subset=128", "--set", "data.test_subset=64"]) == 0, capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["threads"] == 1
    assert yaml.safe_load((out / "config.yaml").read_text())["threads"] == 1
    assert main(["pretrain", "--threads", "0"]) == 2
    assert "--threads: must be > 0" in capsys.readouterr().err
