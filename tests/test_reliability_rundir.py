"""Run folders: one writer per folder, a full disk and Ctrl-C leave the last checkpoint usable and
say so in one line, temp files of killed writes are swept at the next start, a user's files (and a
finished run) are never deleted by a new start, a torn log line does not stop a resume."""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import ssl_emp.pruning.diagnostics
import ssl_emp.run.files
from ssl_emp.config import load_config
from ssl_emp.curate.embed import cached_embeddings
from ssl_emp.data.fingerprint import split_fingerprint
from ssl_emp.errors import RunFailed
from ssl_emp.run.checkpoint import load_checkpoint
from ssl_emp.run.files import atomic_torch_save, atomic_write_text, sweep_temp_files
from ssl_emp.run.folder import LOCK_NAME, MARKER_NAME, MARKER_TEXT
from tests.helpers import bench_file, benchmark, interrupt_after, resume
from tests.reliability_helpers import FAST, one_line, pretrain

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# ----------------------------------------------------------------------------- one writer per folder


def _hold_lock(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "w")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


@pytest.mark.slow
def test_second_writer_gets_one_line_and_exit_2(tmp_path, tiny_args, capsys):
    out = tmp_path / "run"
    holder = _hold_lock(out)  # another process's run (a second open file description conflicts the same way)
    try:
        assert pretrain(out, tiny_args, *FAST) == 2
        assert "another ssl-emp process is writing to" in one_line(capsys)
        assert [p.name for p in out.iterdir()] == [".lock"]  # it wrote nothing
    finally:
        holder.close()
    # The lock file of a finished (or killed) process is no obstacle.
    assert pretrain(out, tiny_args, *FAST) == 0
    assert (out / "checkpoints" / "final.pt").is_file()


def test_benchmark_takes_the_same_lock(tmp_path, capsys):
    out = tmp_path / "bench"
    holder = _hold_lock(out)
    try:
        code = benchmark(CONFIGS / "bench_digits_smoke.yaml", out)
    finally:
        holder.close()
    assert code == 2 and "another ssl-emp process" in one_line(capsys)
    assert not (out / "benchmark.json").exists()


def test_bad_input_leaves_no_folder_behind(tmp_path, tiny_args, capsys):
    out = tmp_path / "bad"
    assert pretrain(out, tiny_args, *FAST, "--set", "optim.batch_size=5000") == 2
    one_line(capsys)
    assert not out.exists()


def _fail_writes_to(monkeypatch, fragment: str, after: int = 0, limit: int = 100) -> dict:
    """Make the ``after``+1-th and later files opened by ssl_emp.run.files whose name contains
    ``fragment`` fail with ENOSPC once ``limit`` bytes are written: a disk that fills up."""
    state = {"opened": 0}
    real_open = open

    class Full(io.FileIO):
        written = 0

        def write(self, data):
            self.written += len(data)
            if self.written > limit:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    def fake_open(path, mode="r", *args, **kwargs):
        if fragment in str(path) and "w" in mode:
            state["opened"] += 1
            if state["opened"] > after:
                return io.BufferedWriter(Full(path, "w"), buffer_size=16)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(ssl_emp.run.files, "open", fake_open, raising=False)
    return state


@pytest.mark.slow
def test_full_disk_during_checkpoint_is_one_line_exit_1_and_keeps_the_last_one(tmp_path, tiny_args, capsys, monkeypatch):
    out = tmp_path / "run"
    _fail_writes_to(monkeypatch, ".last.pt.ssl-emp-tmp", after=1)  # epoch 0's checkpoint is written, epoch 1's is not
    assert pretrain(out, tiny_args, *FAST[:-1], "2") == 1
    err = one_line(capsys)
    assert err == f"ssl-emp: error: cannot write {out / 'checkpoints' / 'last.pt'}: no space left on device"
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.pt"]  # no temp file left
    monkeypatch.undo()  # space freed: the run continues from its last checkpoint
    assert resume(out) == 0
    assert [json.loads(ln)["epoch"] for ln in (out / "metrics.jsonl").read_text().splitlines()] == [-1, 0, 1]


def test_full_disk_while_writing_the_pruning_table_is_one_line_exit_1(tmp_path, tiny_args, capsys, monkeypatch):
    class FullCsv:
        @staticmethod
        def writer(handle):
            class Writer:
                def writerow(self, row):
                    handle.write("index,count\n")
                    raise OSError(errno.ENOSPC, "No space left on device")

            return Writer()

    monkeypatch.setattr(ssl_emp.pruning.diagnostics, "csv", FullCsv)  # the table writer
    out = tmp_path / "run"
    assert pretrain(out, tiny_args, *FAST) == 1
    assert one_line(capsys) == f"ssl-emp: error: cannot write {out / 'pruning_table.csv'}: no space left on device"
    assert not [p for p in out.iterdir() if ".ssl-emp-tmp" in p.name]
    assert load_checkpoint(out / "checkpoints" / "final.pt")["epoch"] == 0


def test_atomic_torch_save_reports_a_full_disk_that_torch_hides(tmp_path, monkeypatch):
    """torch.save turns the ENOSPC of a write into 'RuntimeError: unexpected pos ...'."""
    target = tmp_path / "x.pt"
    atomic_torch_save({"a": torch.arange(10)}, target)
    _fail_writes_to(monkeypatch, ".x.pt.ssl-emp-tmp", limit=1000)
    with pytest.raises(RunFailed, match=r"x\.pt: no space left on device"):
        atomic_torch_save({"a": torch.zeros(100_000)}, target)
    with pytest.raises(RunFailed, match="no space left"):
        atomic_write_text(tmp_path / "x.pt", "a" * 10_000)
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.arange(10))


# ----------------------------------------------------------------------------- Ctrl-C


@pytest.mark.slow
def test_ctrl_c_before_the_first_checkpoint_then_the_same_command_starts_clean(tmp_path, tiny_args, capsys):
    out = tmp_path / "run"
    args = [*tiny_args, *FAST[:-1], "2", "--set", "log_every=1"]
    with interrupt_after(1, exc=KeyboardInterrupt):  # Ctrl-C at the 2nd step: in epoch 1
        assert pretrain(out, args) == 130
    err = one_line(capsys)
    assert "rerun the same command to start again" in err and "--resume" not in err
    assert resume(out) == 2
    assert "rerun the same command without --resume" in one_line(capsys)
    assert pretrain(out, args) == 0
    assert "stopped before its first checkpoint" in capsys.readouterr().err
    epochs = [json.loads(ln)["epoch"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [-1, 0, 1]
    rows = list(csv.reader((out / "steps.csv").read_text().splitlines()))
    assert rows[0] == ["step", "epoch", "lr", "loss"] and all(r[0].isdigit() for r in rows[1:])
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(1, 5)]  # 128 images / 64: 2 steps x 2 epochs


def _curation(tmp_path: Path, args: list[str]) -> list[str]:
    """A semdedup run's arguments: it writes embeddings.json before its first epoch."""
    cfg = load_config(None, [arg for arg in args if "=" in arg and not arg.startswith("-")])
    folder = tmp_path / "emb"
    folder.mkdir()
    cached_embeddings(folder, "train", {"data_fingerprint": split_fingerprint(cfg.data)},
                      lambda: np.random.default_rng(0).normal(size=(128, 8)).astype(np.float32))
    return ["--method", "semdedup", "--pruning-rate", "0.5", "--set", f"pruning.embeddings={folder / 'embeddings_train.npy'}"]


@pytest.mark.parametrize("extra", ["tensorboard", "curation"])
def test_a_run_stopped_before_its_first_checkpoint_starts_again_whatever_it_wrote(tmp_path, tiny_args, capsys, extra):
    """A run's own files written before its first checkpoint (the TensorBoard folder, a curation
    method's embeddings.json) never make the folder look like a user's."""
    out = tmp_path / "run"
    args = [*tiny_args, *FAST, "--set", "log_every=1"]
    args += ["--set", "logging.tensorboard=true"] if extra == "tensorboard" else _curation(tmp_path, args)
    with interrupt_after(0, exc=KeyboardInterrupt):  # Ctrl-C at the first step: before the first checkpoint
        assert pretrain(out, args) == 130
    assert "rerun the same command to start again" in one_line(capsys)
    assert pretrain(out, args) == 0
    assert "stopped before its first checkpoint" in capsys.readouterr().err
    assert load_checkpoint(out / "checkpoints" / "final.pt")["epoch"] == 0
    if extra == "tensorboard":  # the stopped attempt's events are gone with it
        assert len(list((out / "tensorboard").iterdir())) == 1


@pytest.mark.slow
def test_ctrl_c_after_a_checkpoint_says_resume_and_resume_works(tmp_path, tiny_args, capsys):
    out = tmp_path / "run"
    with interrupt_after(2, exc=KeyboardInterrupt):  # at the 3rd step: epoch 2, after epoch 1's checkpoint
        assert pretrain(out, tiny_args, *FAST[:-1], "2") == 130
    assert "the last checkpoint is intact (continue with --resume)" in one_line(capsys)
    assert resume(out) == 0
    assert load_checkpoint(out / "checkpoints" / "final.pt")["epoch"] == 1


# ----------------------------------------------------------------------------- temp files of killed writes


@pytest.mark.slow
def test_temp_files_of_a_killed_run_are_swept_at_the_next_start(tmp_path, tiny_args):
    out = tmp_path / "run"
    assert pretrain(out, tiny_args, *FAST[:-1], "2", "--set", "data.train_subset=64") == 0
    (out / "checkpoints" / "final.pt").unlink()
    (out / "summary.json").unlink()
    stale = [out / "checkpoints" / ".last.pt.ssl-emp-tmp4242", out / ".summary.json.ssl-emp-tmp99"]
    users = [out / ".notes.tmp", out / ".notes.tmp123", out / ".summary.json.tmp99", out / "checkpoints" / ".a.tmp1"]
    for path in stale + users:
        path.write_bytes(b"half a file")
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    ckpt["epoch"] = 0  # as if killed while writing epoch 1's checkpoint
    torch.save(ckpt, out / "checkpoints" / "last.pt")
    assert resume(out) == 0
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"half a file" for p in users)  # not named as this project names its temp files
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [".a.tmp1", "final.pt", "last.pt"]


def test_sweep_in_a_shared_folder_keeps_live_writers_files(tmp_path):
    live = tmp_path / f".a.pt.ssl-emp-tmp{os.getpid()}"
    dead = tmp_path / f".b.pt.ssl-emp-tmp{2**22 + 1}"  # above Linux's largest pid: no such process
    keep = tmp_path / "c.pt"
    for path in (live, dead, keep):
        path.write_bytes(b"x")
    assert sweep_temp_files(tmp_path, only_dead=True) == [dead]
    assert sorted(sweep_temp_files(tmp_path)) == [live]
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


# ----------------------------------------------------------------------------- whose folder it is


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes, the lock file aside (each start rewrites its pid)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_NAME}


def test_a_users_folder_is_refused_in_one_line_and_left_as_it_was(tmp_path, tiny_args, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    for name in ("config.yaml", "metrics.jsonl", "steps.csv", "notes.txt", ".notes.tmp", ".notes.tmp123"):
        (out / name).write_text(f"the user's {name}\n")
    stale = out / f".config.yaml.ssl-emp-tmp{2**22 + 1}"  # this project's name for a temp file: swept
    stale.write_text("half a config")
    before = _files(out)
    assert pretrain(out, tiny_args, *FAST) == 2
    err = one_line(capsys)
    assert f"{out} is not empty and is not an ssl-emp run folder" in err and "choose another --output-dir" in err
    del before[stale.name]
    assert _files(out) == before


@pytest.mark.slow
def test_a_finished_run_whose_checkpoints_were_removed_is_refused_not_wiped(tmp_path, tiny_args, capsys):
    out = tmp_path / "run"
    out.mkdir()  # an empty folder is fine to use
    args = [*tiny_args, *FAST[:-1], "2", "--set", "data.train_subset=64"]
    assert pretrain(out, args) == 0
    assert (out / MARKER_NAME).read_text() == MARKER_TEXT
    capsys.readouterr()
    shutil.rmtree(out / "checkpoints")  # to free disk
    before = _files(out)
    assert pretrain(out, args) == 2
    err = one_line(capsys)
    assert "got past its first checkpoint (summary.json)" in err and "choose another --output-dir" in err
    assert _files(out) == before
    for name in ("summary.json", "pruning_table.csv"):  # its logs alone still tell a run past epoch 0
        (out / name).unlink()
    before = _files(out)
    assert pretrain(out, args) == 2
    assert "metrics.jsonl has epochs after the first checkpoint" in one_line(capsys)
    assert _files(out) == before


def test_a_users_file_in_an_unstarted_run_keeps_it_from_being_reset(tmp_path, tiny_args, capsys):
    out = tmp_path / "run"
    with interrupt_after(0, exc=KeyboardInterrupt):
        assert pretrain(out, tiny_args, *FAST) == 130
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, MARKER_NAME, "config.yaml", "metrics.jsonl", "steps.csv"]
    (out / "notes.txt").write_text("mine")
    before = _files(out)
    assert pretrain(out, tiny_args, *FAST) == 2
    assert "holds files no ssl-emp run wrote (notes.txt); choose another --output-dir" in one_line(capsys)
    assert _files(out) == before


@pytest.mark.slow
def test_benchmark_restarts_its_own_unstarted_run_but_never_empties_a_folder_it_did_not_write(tmp_path, capsys):
    bench = bench_file(tmp_path, {"methods": ["full"], "rates": [0.5], "seeds": [0]}, epochs=1, progress=False,
                       data={"train_subset": 128, "image_size": 16}, optim={"batch_size": 64})
    out = tmp_path / "sweep"
    with interrupt_after(0, exc=KeyboardInterrupt):  # killed before the run's first checkpoint
        assert benchmark(bench, out) == 130
    run_dir = out / "runs" / "full_s0"
    (run_dir / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert benchmark(bench, out) == 2
    assert f"{run_dir} holds files no ssl-emp run wrote (notes.txt)" in one_line(capsys)
    assert (run_dir / "notes.txt").read_text() == "mine"
    (run_dir / "notes.txt").unlink()
    assert benchmark(bench, out) == 0  # only the run's own files: started again
    assert [json.loads(ln)["epoch"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()] == [-1, 0]


def test_config_yaml_is_written_atomically(tmp_path, tiny_args, capsys, monkeypatch):
    out = tmp_path / "run"
    _fail_writes_to(monkeypatch, ".config.yaml.ssl-emp-tmp")
    assert pretrain(out, tiny_args, *FAST) == 1
    assert one_line(capsys) == f"ssl-emp: error: cannot write {out / 'config.yaml'}: no space left on device"
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, MARKER_NAME]  # no half config, no temp file


# ----------------------------------------------------------------------------- torn log lines


@pytest.mark.slow
def test_resume_drops_a_torn_last_log_line_and_refuses_a_damaged_one(tmp_path, tiny_args, capsys):
    out = tmp_path / "run"
    with interrupt_after(2, exc=KeyboardInterrupt):  # at the 3rd step: in epoch 2, after epoch 1's checkpoint
        assert pretrain(out, tiny_args, *FAST[:-1], "2", "--set", "log_every=1") == 130
    capsys.readouterr()
    metrics, steps = out / "metrics.jsonl", out / "steps.csv"
    good_metrics, good_steps = metrics.read_bytes(), steps.read_bytes()

    lines = good_steps.split(b"\n")
    lines[1] = b"1,0,what"  # not the last line: not torn by a crash, so not dropped silently
    steps.write_bytes(b"\n".join(lines))
    damaged = steps.read_bytes()
    assert resume(out) == 2
    assert f"{steps} line 2 is not a log line of ssl-emp ('1,0,what')" in one_line(capsys)
    assert (metrics.read_bytes(), steps.read_bytes()) == (good_metrics, damaged)  # neither rewritten

    metrics.write_bytes(good_metrics + b'{"epoch": 1, "loss": 0.1')  # killed mid-append: no newline
    steps.write_bytes(good_steps + b"3,1,0.0\x00\xff\n")  # a last line that does not parse
    assert resume(out) == 0
    err = capsys.readouterr().err
    assert f"{metrics}: dropped a torn last line" in err and f"{steps}: dropped a torn last line" in err
    assert "Traceback" not in err
    assert [json.loads(ln)["epoch"] for ln in metrics.read_text().splitlines()] == [-1, 0, 1]
    rows = steps.read_text().splitlines()
    assert rows[0] == "step,epoch,lr,loss"
    assert [r.split(",")[:2] for r in rows[1:]] == [["1", "0"], ["2", "0"], ["3", "1"], ["4", "1"]]
