"""DataLoader workers and process signals where users meet them: a run's result does not depend on
``data.num_workers``, resume is exact with workers, a killed run's workers do not keep its folder
locked, and SIGTERM checkpoints-or-keeps like Ctrl-C with one line and exit 143."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssl_emp.cli import EXIT_TERMINATED, main
from ssl_emp.run.checkpoint import load_checkpoint
from tests.helpers import ROOT, Interrupt, assert_same_table, child_env, interrupt_after, resume

# 256 images at batch 64 (4 steps per epoch), kNN only at the end, one step per CSV line.
COMMON = ["--set", "data.train_subset=256", "--set", "eval.eval_every=0", "--set", "log_every=1",
          "--method", "emp", "--pruning-rate", "0.5", "--epochs", "3"]


def _final(out: Path) -> dict:
    return load_checkpoint(out / "checkpoints" / "final.pt")


def _assert_same_run(a: Path, b: Path) -> None:
    ca, cb = _final(a), _final(b)
    for key in ca["model"]:
        if key != "_extra_state":
            assert torch.equal(ca["model"][key], cb["model"][key]), key
    assert_same_table(cb["pruner"]["table"], ca["pruner"]["table"])
    assert (a / "steps.csv").read_text() == (b / "steps.csv").read_text()


@pytest.mark.slow
def test_worker_count_does_not_change_the_result(tmp_path, tiny_args):
    # The benchmark treats data.num_workers as not changing what a run computes: this is why it may.
    assert main(["pretrain", "--output-dir", str(tmp_path / "w0"), *tiny_args, *COMMON]) == 0
    assert main(["pretrain", "--output-dir", str(tmp_path / "w2"), *tiny_args, *COMMON,
                 "--set", "data.num_workers=2"]) == 0
    _assert_same_run(tmp_path / "w0", tmp_path / "w2")


@pytest.mark.slow
def test_resume_with_workers_equals_the_uninterrupted_run(tmp_path, tiny_args):
    workers = [*tiny_args, *COMMON, "--set", "data.num_workers=2"]
    assert main(["pretrain", "--output-dir", str(tmp_path / "straight"), *workers]) == 0
    with interrupt_after(2 * 2), pytest.raises(Interrupt):  # two epochs of 2 steps (128 kept images / batch 64)
        main(["pretrain", "--output-dir", str(tmp_path / "split"), *workers])
    assert load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["epoch"] == 1
    assert resume(tmp_path / "split") == 0
    _assert_same_run(tmp_path / "straight", tmp_path / "split")


def _start(out: Path, *extra: str) -> subprocess.Popen:
    """``ssl-emp pretrain`` in a child process (what a user, SLURM or kill sees)."""
    from tests.conftest import TINY

    cmd = [sys.executable, "-m", "ssl_emp", "pretrain", "--output-dir", str(out), *TINY, *COMMON, *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(proc: subprocess.Popen, out: Path, timeout: float = 120) -> None:
    last = out / "checkpoints" / "last.pt"
    deadline = time.monotonic() + timeout
    while not last.is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_run_with_workers_can_be_resumed_at_once(tmp_path, capsys):
    out = tmp_path / "run"
    proc = _start(out, "--set", "data.num_workers=2", "--epochs", "30")
    _wait_for_checkpoint(proc, out)
    proc.kill()  # kill -9: no handler runs; the orphaned workers linger for seconds
    proc.communicate()
    # Resume at once, in this process: the lock must have died with the killed process.
    with interrupt_after(1, exc=KeyboardInterrupt):  # one step is enough to know the lock was taken
        assert resume(out) == 130
    err = capsys.readouterr().err
    assert "another ssl-emp process" not in err and "continue with --resume" in err


@pytest.mark.slow
def test_sigterm_mid_epoch_says_what_to_do_and_resumes_exactly(tmp_path):
    # All three runs in child processes of the same environment: the comparison is bit for bit, and
    # this test process's thread settings (changed by other tests) must not enter it.
    straight, out = tmp_path / "straight", tmp_path / "run"
    done = _start(straight, "--epochs", "12")
    assert done.communicate(timeout=300) and done.returncode == 0
    # Signalled as soon as epoch 1's checkpoint exists: it lands in one of the 11 epochs after it.
    proc = _start(out, "--epochs", "12")
    _wait_for_checkpoint(proc, out)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.fail("the run finished before SIGTERM arrived; the test needs a longer run")
    lines = err.strip().splitlines()
    assert proc.returncode == EXIT_TERMINATED and len(lines) == 1 and "Traceback" not in err, err
    assert "terminated (SIGTERM)" in lines[0] and "continue with --resume" in lines[0]
    resumed = _start(out, "--epochs", "12", "--resume")
    assert resumed.communicate(timeout=300) and resumed.returncode == 0
    _assert_same_run(straight, out)
