"""Shared helpers of the reliability tests: a tiny pretraining run through the CLI, its one-line error."""

from __future__ import annotations

from pathlib import Path

from ssl_emp.cli import main

# k below the 128-image bank: the default k = 200 would add the one-line "lowering k" notice to stderr.
FAST = ["--set", "data.train_subset=128", "--set", "eval.eval_every=0", "--set", "eval.knn_k=20", "--epochs", "1"]


def one_line(capsys) -> str:
    """The captured stderr, checked to be one line and no traceback."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def pretrain(out: Path, tiny_args: list[str], *extra: str) -> int:
    """``ssl-emp pretrain --output-dir out`` with the tiny model and ``extra``; the exit code."""
    return main(["pretrain", "--output-dir", str(out), *tiny_args, *extra])
