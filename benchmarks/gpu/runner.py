"""Each step in its own process group with its own time limit; a failure or a timeout is recorded
and the next step runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .context import ROOT, tail

GRACE = 10  # a step past its limit gets this long before its process group is killed

Command = Callable[[str, Path, float], list[str]]


def run_steps(names: list[str], budgets: dict[str, float], total: float, command: Command,
              on_result: Callable[[dict[str, Any]], None] = lambda steps: None, env: dict[str, str] | None = None,
              grace: float = GRACE) -> dict[str, Any]:
    """Run each step as ``command(name, result_file, deadline)`` in its own process group, with
    ``min(its budget, what is left of total)`` seconds; returns ``{name: result}``, where a step that
    failed, timed out or wrote nothing has its status, seconds and output tail recorded."""
    end = time.time() + total
    steps: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        for name in names:
            left = end - time.time()
            if left < min(5, budgets[name]):  # too little left for this step to say anything
                steps[name] = {"status": "not run", "reason": f"the {total:.0f} s total budget is spent"}
            else:
                steps[name] = _run_one(name, Path(tmp), min(budgets[name], left), command, env, grace)
            on_result(steps)
    return steps


def _run_one(name: str, tmp: Path, limit: float, command: Command, env: dict[str, str] | None,
             grace: float) -> dict[str, Any]:
    """One step's process, killed ``grace`` seconds past ``limit``; its result with the bookkeeping added."""
    result_file, log_file = tmp / f"{name}.json", tmp / f"{name}.log"
    t0 = time.time()
    rc, timed_out = _wait(command(name, result_file, t0 + limit), log_file, limit + grace, env)
    result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    status = "timeout" if timed_out else ("failed" if rc != 0 else None)
    if status is not None:
        result["status"] = status
        result["rc"] = rc
        result["output_tail"] = tail(log_file.read_text(errors="replace"))
    elif "status" not in result:
        result = {**result, "status": "failed", "reason": "the step wrote no result"}
    result["seconds"] = round(time.time() - t0, 1)
    return result


def _wait(cmd: list[str], log_file: Path, timeout: float, env: dict[str, str] | None) -> tuple[int | None, bool]:
    """``cmd``'s exit code (None when killed) and whether it ran past ``timeout``, its output in ``log_file``."""
    with open(log_file, "w") as log:
        # A new session: a step's own children (DataLoader workers, pytest) go with it on a kill.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
        try:
            return proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None, True
