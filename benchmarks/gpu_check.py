"""The first checks on a CUDA machine, in one command (about 9 minutes on one GPU), into one JSON.

    python benchmarks/gpu_check.py [--data PATH] [--steps NAME,...] [--budget SECONDS] [--output FILE]
    python benchmarks/gpu_check.py --dry-run     # anywhere: builds the CPU part, runs nothing on CUDA

Run from the repository root with the project's dependencies importable (torch, kornia, lightly,
timm, faiss). Steps, each in its own process with its own time limit; a failure or a timeout is
recorded and the next step runs:

  pytest_cuda  ``pytest -m cuda``: the tests that need a GPU.
  sync         one training step each of SimCLR, MoCo and supervised, EMP pruning, under
               ``torch.cuda.set_sync_debug_mode("error")`` on non-logging steps: zero
               synchronisations, or the first one's traceback and then (mode "warn") the list of
               what synchronised and where. kornia's own modules are listed the same way, for reference.
  throughput   ssl-emp's SimCLR step (views made on the GPU) against lightly's own SimCLR recipe
               (torchvision transforms in DataLoader workers, SimCLRProjectionHead, NTXentLoss),
               ResNet-18 with the CIFAR stem, 32 px, batch 512, bf16 autocast, with and without
               torch.compile, interleaved rounds: source images per second for each.
  faiss        faiss-gpu kNN against the CPU index on the same features (identical top-1).
  two_epochs   2 epochs of configs/cifar10_simclr_resnet18.yaml on all of CIFAR-10 through
               ``ssl_emp.train.pretrain``: epoch times, peak GPU memory, kNN top-1 after two epochs.
  photo_input  configs/imagefolder_simclr_resnet50_gpu.yaml on a temporary folder of 300-600 px
               JPEGs: decoding into memory, the loader alone (views cut in 8 workers) and ResNet-50
               SimCLR steps at 224 px, in images/s; the stored images' MiB per 1,000 photos; the
               loader again with data.backend=dali (NVIDIA DALI decoding the crops on the GPU).

Data: ``--data`` or the CIFAR-10 archive at shared/data/cifar10-jpeg.tar.gz (inside the checkout, or
beside it); without one the sync and throughput steps use a synthetic image folder and
``two_epochs`` is skipped. The JSON (default benchmarks/results/gpu/<UTC time>_<GPU>.json) holds
``ssl_emp.runtime.versions()``, ``machine()``, the device name and every step's result. Exit status:
0 when no step failed, 1 when one did, 2 without CUDA (one line, nothing run).

This file is the command line, the order of the steps and the record; each step's code is in
benchmarks/gpu/ (``context``, ``runner``, ``dry_run`` and one module per step).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the device machine may run from a plain checkout, nothing installed
    sys.path.insert(0, str(ROOT))

# The steps live in benchmarks/gpu/, one module each; the data helpers are also what tests/test_gpu_check.py reads.
from benchmarks.gpu.context import GPU_CONFIG, Context, find_archive, synthetic_folder, write_json  # noqa: E402
from benchmarks.gpu.context import data_overrides as _data_overrides  # noqa: E402
from benchmarks.gpu.dry_run import build_cpu_part  # noqa: E402
from benchmarks.gpu.faiss_knn import step_faiss  # noqa: E402
from benchmarks.gpu.photo_input import step_photo_input  # noqa: E402
from benchmarks.gpu.pytest_cuda import step_pytest_cuda  # noqa: E402
from benchmarks.gpu.runner import run_steps  # noqa: E402
from benchmarks.gpu.syncs import step_sync  # noqa: E402
from benchmarks.gpu.throughput import step_throughput  # noqa: E402
from benchmarks.gpu.two_epochs import step_two_epochs  # noqa: E402

# Seconds per step; the sum stays under the default total budget, which trims the last steps first.
BUDGETS = {"pytest_cuda": 60, "sync": 80, "throughput": 170, "faiss": 30, "two_epochs": 110, "photo_input": 100}
TOTAL_BUDGET = 550
PLAN = {
    "pytest_cuda": "pytest -m cuda",
    "sync": "a SimCLR, MoCo and supervised EMP step under sync-debug error mode",
    "throughput": "ssl-emp vs lightly SimCLR, ResNet-18, batch 512, bf16, eager and compiled",
    "faiss": "faiss-gpu kNN and curate's k-means vs the CPU",
    "two_epochs": "2 epochs of cifar10_simclr_resnet18.yaml on CIFAR-10",
    "photo_input": "the photo input path of imagefolder_simclr_resnet50_gpu.yaml (decode, loader, ResNet-50 steps)",
}
STEPS: dict[str, Callable[[Context], dict[str, Any]]] = {  # in the order they run
    "pytest_cuda": step_pytest_cuda, "sync": step_sync, "throughput": step_throughput,
    "faiss": step_faiss, "two_epochs": step_two_epochs, "photo_input": step_photo_input,
}


def dry_run(data: str | None) -> str:
    """Everything on the CPU up to the first CUDA call; returns the line saying what would run."""
    gpu_faiss = build_cpu_part(data)
    plan = "; ".join(f"{PLAN[name]} ({BUDGETS[name]} s)" for name in STEPS)
    return (f"gpu_check --dry-run: configs, models, view pipelines, lightly's recipe and synthetic data built on the "
            f"CPU; on CUDA it would run, within {TOTAL_BUDGET} s: {plan}; data {data or 'synthetic (no CIFAR archive)'}, "
            f"{gpu_faiss}; results in benchmarks/results/gpu/")


def _header(data: str | None) -> dict[str, Any]:
    """Versions, machine and device, each recorded even if another is unavailable."""
    from ssl_emp import runtime

    out: dict[str, Any] = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "data": data,
                           "device": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
                           "command": " ".join(["python", *sys.argv])}
    for key, fn in (("versions", runtime.versions), ("machine", runtime.machine)):
        try:
            out[key] = fn()
        except Exception as exc:  # a missing optional dependency must not cost the rest of the record
            out[key] = f"unavailable: {type(exc).__name__}: {exc}"
    return out


def _prepare_data(args: argparse.Namespace, tmp: Path) -> tuple[str, dict[str, Any]]:
    """The CIFAR archive, decoded once here (the step processes then read the cache), or a
    synthetic folder when there is none or it cannot be read."""
    archive = find_archive(args.data)
    if archive is not None:
        t0 = time.perf_counter()
        try:
            from ssl_emp.config import load_config
            from ssl_emp.data import load_data

            load_data(load_config(GPU_CONFIG, _data_overrides(str(archive))).data)
            return str(archive), {"source": str(archive), "decode_s": round(time.perf_counter() - t0, 1)}
        except Exception as exc:
            note = {"source": str(archive), "error": f"{type(exc).__name__}: {exc}"}
    else:
        note = {"source": None, "note": "CIFAR-10 archive not found: synthetic images"}
    return f"synthetic:{synthetic_folder(tmp / 'synthetic')}", note


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The arguments and the steps to run (exit 2 on an unknown one)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="build the CPU part only and say what would run")
    parser.add_argument("--data", help="CIFAR-10 archive or folder (default: shared/data/cifar10-jpeg.tar.gz)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, from {', '.join(STEPS)}")
    parser.add_argument("--budget", type=float, default=TOTAL_BUDGET, help="seconds for all steps together")
    parser.add_argument("--output", help="the JSON (default benchmarks/results/gpu/<UTC time>_<GPU>.json)")
    parser.add_argument("--step", help=argparse.SUPPRESS)  # internal: run one step in this process
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.steps.split(",") if n.strip()]
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    return args, names


def _run_one_step(args: argparse.Namespace) -> int:
    """Inside a step's own process: the step, its result written where the runner reads it."""
    ctx = Context(args.deadline, args.data, Path(args.result))
    ctx.save({"status": "failed", "reason": "started, did not finish"})
    ctx.save(STEPS[args.step](ctx))
    return 0


def _run_all(args: argparse.Namespace, names: list[str]) -> int:
    """Every step in its own process, the record rewritten after each; 1 when one failed."""
    with tempfile.TemporaryDirectory(prefix="gpu_check_data_") as tmp:
        data, data_note = _prepare_data(args, Path(tmp))
        record = {**_header(data), "data_preparation": data_note, "budget_s": args.budget, "steps": {}}
        slug = re.sub(r"[^A-Za-z0-9]+", "-", record["device"]).strip("-")
        output = Path(args.output) if args.output else (
            ROOT / "benchmarks" / "results" / "gpu" / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}_{slug}.json")

        def save(steps: dict[str, Any]) -> None:
            record["steps"] = steps
            write_json(output, record)

        def command(name: str, result: Path, deadline: float) -> list[str]:
            return [sys.executable, str(Path(__file__).resolve()), "--step", name, "--result", str(result),
                    "--deadline", str(deadline), "--data", data]

        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               "PYTHONUNBUFFERED": "1"}
        steps = run_steps(names, BUDGETS, args.budget, command, save, env)
    failed = [n for n, r in steps.items() if r.get("status") not in ("ok", "skipped")]
    print(f"gpu_check: {len(steps) - len(failed)}/{len(steps)} steps ok or skipped"
          + (f", failed: {', '.join(failed)}" if failed else "") + f"; results in {output}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args, names = _parse(argv)
    if args.step:
        return _run_one_step(args)
    if args.dry_run:
        archive = find_archive(args.data)
        print(dry_run(str(archive) if archive else None))
        return 0
    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}); "
              "nothing run (--dry-run builds the CPU part)")
        return 2
    return _run_all(args, names)


if __name__ == "__main__":
    sys.exit(main())
