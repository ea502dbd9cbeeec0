"""Scaffolding shared by the test files: scripts and child processes (two gloo ranks under torchrun),
interrupting a run from inside its training step and tiny benchmark sweeps."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
import torch
import yaml

import ssl_emp.eval.from_checkpoint
import ssl_emp.models
import ssl_emp.train
from ssl_emp.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


# --------------------------------------------------------------------------- scripts and child processes
def load_script(path: Path, name: str | None = None) -> ModuleType:
    """The Python file at ``path`` as a module (a test's worker script, a benchmark script)."""
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child_env() -> dict[str, str]:
    """This environment for a child process: one thread per process, the repository importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _torchrun() -> list[str]:
    local = Path(sys.executable).parent / "torchrun"
    if local.exists():
        return [str(local)]
    found = shutil.which("torchrun")
    return [found] if found else [sys.executable, "-m", "torch.distributed.run"]


def torchrun(script: Path, *args: str | Path, timeout: float) -> None:
    """``script`` on two local ranks (``torchrun --standalone --nproc_per_node=2``), which must succeed."""
    cmd = [*_torchrun(), "--standalone", "--nproc_per_node=2", str(script), *map(str, args)]
    proc = subprocess.run(cmd, env=child_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def rank_records(folder: Path) -> list[dict]:
    """What each of the two ranks saved as ``folder/rank<r>.pt``."""
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(2)]


def assert_same_table(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Every column of ``expected`` is in ``actual``, bit for bit (NaN where NaN)."""
    for name, column in expected.items():
        torch.testing.assert_close(actual[name], column, rtol=0, atol=0, equal_nan=True)


# --------------------------------------------------------------------------- interrupting a run
class Interrupt(Exception):
    """Raised from inside a training step by ``interrupt_after``: the run dies there."""


@contextmanager
def interrupt_after(steps: int, model: type = ssl_emp.models.SimCLR,
                    exc: type[BaseException] = Interrupt) -> Iterator[None]:
    """Within the block, ``model.forward`` runs ``steps`` times and then raises ``exc`` (KeyboardInterrupt
    for a Ctrl-C, which the CLI turns into exit 130)."""
    real = model.forward
    calls = {"n": 0}

    def forward(self, *views, labels=None):
        calls["n"] += 1
        if calls["n"] > steps:
            raise exc
        return real(self, *views, labels=labels)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model, "forward", forward)
        yield


def resume(out: Path) -> int:
    """``ssl-emp pretrain --output-dir out --resume``: its exit code."""
    return main(["pretrain", "--output-dir", str(out), "--resume", "--no-progress"])


# --------------------------------------------------------------------------- tiny benchmark sweeps
# The 8-to-64-channel ResNet and small projection head of conftest's TINY, as benchmark overrides.
TINY_MODEL = {"backbone_kwargs": {"channels": [8, 16, 32, 64]}, "proj_hidden_dim": 64, "proj_out_dim": 32}


def bench_file(folder: Path, grid: dict, **overrides) -> Path:
    """``folder/bench.yaml``: ``grid`` on the digits config with the tiny model, kNN at the end only and
    no linear probe; ``overrides`` are added to (or replace) those config overrides."""
    doc = {"base": str(CONFIGS / "digits_simclr.yaml"),
           "overrides": {"model": TINY_MODEL, "eval": {"eval_every": 0}, **overrides},
           "grid": grid, "linear_probe": False}
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def benchmark(config: Path | str, out: Path, *extra: str) -> int:
    """``ssl-emp benchmark --config config --output-dir out ...``: its exit code."""
    return main(["benchmark", "--config", str(config), "--output-dir", str(out), *extra])


def results(out: Path) -> list[dict]:
    """A sweep's rows, as results.json holds them."""
    return json.loads((out / "results.json").read_text())


def rows_by_id(out: Path) -> dict[str, dict]:
    """A sweep's rows by run id, in results.json's order."""
    return {r["run_id"]: r for r in results(out)}


def split_sweep(folder: Path, other: Path, moves: Callable[[dict], bool], reverse: bool = False) -> list[dict]:
    """Move the rows for which ``moves(row)`` into ``other``, a second folder of the same sweep (its plan
    and those rows; the run folders stay), in reverse order if asked; returns all rows as they were."""
    other.mkdir()
    shutil.copy(folder / "benchmark.json", other)
    rows = results(folder)
    moved = [r for r in rows if moves(r)]
    (folder / "results.json").write_text(json.dumps([r for r in rows if not moves(r)]))
    (other / "results.json").write_text(json.dumps(moved[::-1] if reverse else moved))
    return rows


def forbid_training(monkeypatch) -> None:
    """Any training or checkpoint evaluation from here on fails the test (and cannot be caught as an error)."""
    def fail(*args, **kwargs):
        pytest.fail("nothing should be retrained or re-evaluated")

    monkeypatch.setattr(ssl_emp.train, "pretrain", fail)
    monkeypatch.setattr(ssl_emp.eval.from_checkpoint, "evaluate_checkpoint", fail)
