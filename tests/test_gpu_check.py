"""benchmarks/gpu_check.py on a machine without CUDA: one line and exit 2, the dry run, and the
step runner's bookkeeping (a failed, silent or timed-out step is recorded and the next one runs)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs the whole check")
def test_without_cuda_it_says_so_in_one_line_and_exits_2() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout + proc.stderr
    assert "no CUDA device" in lines[0] and "--dry-run" in lines[0]


@pytest.mark.slow
def test_dry_run_builds_the_cpu_part_and_says_what_it_would_run() -> None:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("gpu_check --dry-run:") and "pytest -m cuda" in line and "benchmarks/results/gpu/" in line
    assert time.perf_counter() - t0 < 120  # ~7 s on an idle 2-core machine


@pytest.mark.slow
def test_unknown_step_is_refused() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--steps", "sync,nope"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown step(s) nope" in proc.stderr


@pytest.mark.slow
def test_run_steps_records_each_outcome_and_goes_on() -> None:
    g = _module()
    programs = {
        "ok": "json.dump({'status': 'ok', 'value': 1}, open(out, 'w'))",
        "boom": "print('something broke'); raise SystemExit(3)",
        "silent": "pass",
        "slow": "json.dump({'partial': True}, open(out, 'w')); time.sleep(60)",
        "late": "json.dump({'status': 'ok'}, open(out, 'w'))",
    }

    def command(name: str, result: Path, deadline: float) -> list[str]:
        assert deadline > time.time()
        return [sys.executable, "-c", f"import json, sys, time; out = {str(result)!r}; {programs[name]}"]

    seen: list[list[str]] = []
    # 8 s in all: the first three take well under a second, "slow" is killed after 3 + 0.5 s, which
    # leaves "late" less than the 5 s a step needs to be started.
    budgets = {"ok": 10, "boom": 10, "silent": 10, "slow": 3, "late": 10}
    t0 = time.time()
    steps = g.run_steps(list(programs), budgets, 8.0, command, lambda s: seen.append(list(s)), grace=0.5)
    assert time.time() - t0 < 15, "the slow step must be killed at its limit"
    assert steps["ok"]["status"] == "ok" and steps["ok"]["value"] == 1
    assert steps["boom"]["status"] == "failed" and steps["boom"]["rc"] == 3 and "something broke" in steps["boom"]["output_tail"]
    assert steps["slow"]["status"] == "timeout" and steps["slow"]["partial"] is True  # what it had written is kept
    assert steps["silent"]["status"] == "failed" and "no result" in steps["silent"]["reason"]
    assert steps["late"]["status"] == "not run" and "budget" in steps["late"]["reason"]
    assert seen[-1] == list(programs) and len(seen) == len(programs)  # saved after every step
    json.dumps(steps)


@pytest.mark.slow
def test_synthetic_folder_loads_through_the_project_loader(tmp_path: Path) -> None:
    g = _module()
    from ssl_emp.config import load_config
    from ssl_emp.data import load_data

    folder = g.synthetic_folder(tmp_path / "images", classes=3, train=5, test=2)
    cfg = load_config(None, ["data.image_size=32", f"data.cache_dir={tmp_path / 'cache'}", *g._data_overrides(f"synthetic:{folder}")])
    data = load_data(cfg.data)
    assert tuple(data.train.images.shape) == (15, 3, 32, 32) and len(data.train.classes) == 3
    assert g.find_archive(str(tmp_path / "missing.tar.gz")) is None
