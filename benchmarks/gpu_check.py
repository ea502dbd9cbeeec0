"""The first checks on a CUDA machine, in one command (about 8 minutes on one GPU), into one JSON.

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

Data: ``--data`` or the CIFAR-10 archive at shared/data/cifar10-jpeg.tar.gz (inside the checkout, or
beside it); without one the sync and throughput steps use a synthetic image folder and
``two_epochs`` is skipped. The JSON (default benchmarks/results/gpu/<UTC time>_<GPU>.json) holds
``ssl_emp.runtime.versions()``, ``machine()``, the device name and every step's result. Exit status:
0 when no step failed, 1 when one did, 2 without CUDA (one line, nothing run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the device machine may run from a plain checkout, nothing installed
    sys.path.insert(0, str(ROOT))

ARCHIVE = Path("shared") / "data" / "cifar10-jpeg.tar.gz"
SYNC_CONFIG = ROOT / "configs" / "cifar10_simclr_cpu.yaml"  # the CPU config, on the GPU: quick to build
GPU_CONFIG = ROOT / "configs" / "cifar10_simclr_resnet18.yaml"
BATCH = 512  # lightly's CIFAR-10 recipe and GPU_CONFIG
DEVICE = "cuda"  # one name, so that the steps' code can be exercised on the CPU
# Seconds per step; the sum stays under the default total budget, which trims the last steps first.
BUDGETS = {"pytest_cuda": 60, "sync": 80, "throughput": 170, "faiss": 30, "two_epochs": 110}
TOTAL_BUDGET = 480
GRACE = 10  # a step past its limit gets this long before its process group is killed


# --------------------------------------------------------------------------- orchestration
@dataclass
class Context:
    """What a step process gets: its deadline, the data to use, where to write its result."""

    deadline: float
    data: str | None  # a CIFAR archive, "synthetic:<folder>", or None (dry run)
    result: Path

    def left(self) -> float:
        return self.deadline - time.time()

    def save(self, result: dict[str, Any]) -> None:
        """Written as the step goes, so that a step killed at its limit still reports what it had."""
        _write_json(self.result, result)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    tmp.replace(path)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_steps(names: list[str], budgets: dict[str, float], total: float, command: Callable[[str, Path, float], list[str]],
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
            limit = min(budgets[name], left)
            if left < min(5, budgets[name]):  # too little left for this step to say anything
                steps[name] = {"status": "not run", "reason": f"the {total:.0f} s total budget is spent"}
                on_result(steps)
                continue
            result_file, log_file = Path(tmp) / f"{name}.json", Path(tmp) / f"{name}.log"
            t0 = time.time()
            status = None
            with open(log_file, "w") as log:
                # A new session: a step's own children (DataLoader workers, pytest) go with it on a kill.
                proc = subprocess.Popen(command(name, result_file, t0 + limit), stdout=log, stderr=subprocess.STDOUT,
                                        cwd=ROOT, env=env, start_new_session=True)
                try:
                    rc = proc.wait(timeout=limit + grace)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    rc, status = None, "timeout"
            result = json.loads(result_file.read_text()) if result_file.is_file() else {}
            if status is None and rc != 0:
                status = "failed"
            if status is not None:
                result["status"] = status
                result["rc"] = rc
                result["output_tail"] = _tail(log_file.read_text(errors="replace"))
            elif "status" not in result:
                result = {**result, "status": "failed", "reason": "the step wrote no result"}
            result["seconds"] = round(time.time() - t0, 1)
            steps[name] = result
            on_result(steps)
    return steps


def _data_overrides(data: str) -> list[str]:
    if data.startswith("synthetic:"):
        return ["data.dataset=imagefolder", f"data.data_dir={data.split(':', 1)[1]}", "data.train_subset=null"]
    return ["data.dataset=imagefolder", f"data.data_dir={data}"]


def find_archive(explicit: str | None) -> Path | None:
    for path in ([Path(explicit)] if explicit else [ROOT / ARCHIVE, ROOT.parent / ARCHIVE]):
        if path.exists():
            return path.resolve()
    return None


def synthetic_folder(root: Path, classes: int = 10, train: int = 160, test: int = 20, size: int = 32) -> Path:
    """An image-folder tree of random PNGs (train/ and test/), ``classes`` x ``train`` training
    images: enough for batches of 512 through the same loader as CIFAR's."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


# --------------------------------------------------------------------------- sync debug mode
def _frames(stack: list[traceback.FrameSummary], keep: int = 6) -> list[str]:
    """The innermost frames outside this script's helpers and the warnings module, shortened."""
    out = []
    for f in stack:
        if f.filename.endswith("warnings.py") or (f.filename == __file__ and f.name in ("show", "_sync_warnings")):
            continue
        name = f.filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        out.append(f"{name}:{f.lineno} {f.name}: {(f.line or '').strip()}")
    return out[-keep:]


def _sync_warnings(fn: Callable[[], None]) -> list[dict[str, Any]]:
    """Run ``fn`` in sync-debug "warn" mode; each synchronising call as message and stack."""
    found: list[dict[str, Any]] = []

    def show(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" in str(message):
            found.append({"message": str(message).splitlines()[0], "where": _frames(traceback.extract_stack())})

    with warnings.catch_warnings():
        warnings.simplefilter("always")  # every call, not once per call site
        warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return found


def sync_check(fn: Callable[[], None]) -> dict[str, Any]:
    """``fn`` under sync-debug "error": zero synchronisations, or the first one's traceback and, in
    "warn" mode over a second run of ``fn``, every one of them."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
        torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        return {"synchronisations": 0}
    except RuntimeError as exc:
        torch.cuda.set_sync_debug_mode("default")
        first = {"error": str(exc).splitlines()[0], "where": _frames(traceback.extract_tb(exc.__traceback__), 8)}
    torch.cuda.synchronize()
    listed = _sync_warnings(fn)
    torch.cuda.synchronize()
    return {"synchronisations": max(1, len(listed)), "first": first, "all": listed}


def _trainer(overrides: list[str], tmp: str):
    from ssl_emp.config import load_config
    from ssl_emp.run.folder import Run
    from ssl_emp.train import build

    return build(load_config(SYNC_CONFIG, [*overrides, f"output_dir={tmp}"]), Run(tmp, is_main=False))


def _sync_one(ctx: Context, algorithm: str, preset: str, warmup: int = 2, checked: int = 3) -> dict[str, Any]:
    """Non-logging steps of the training loop (next batch, schedule, ``train_step``, loss sum) of
    one algorithm with EMP, after ``warmup`` steps that may sync (lazy CUDA init, optimizer state)."""
    from ssl_emp.train import RESOLUTION, lr_factor, train_step

    overrides = [f"device={DEVICE}", f"algorithm={algorithm}", f"augment.preset={preset}", "pruning.method=emp",
                 "pruning.rate=0.3", "log_every=1000000", "progress=false", *_data_overrides(ctx.data)]
    with tempfile.TemporaryDirectory() as tmp:
        t = _trainer(overrides, tmp)
        t.state.model.train()
        t.state.pruner.set_epoch(0)
        cfg, steps = t.cfg, len(t.loader)
        diverged = torch.zeros((), dtype=torch.bool, device=t.device)
        loss_sum = torch.zeros((), device=t.device)
        counter = [0]

        def loop(batches: Any, n: int) -> None:  # train_one_epoch's body without its logging branch
            for _ in range(n):
                idx, images = next(batches)
                progress = (counter[0] * RESOLUTION) // steps
                for group, base in zip(t.state.optimizer.param_groups, t.base_lrs, strict=True):
                    group["lr"] = base * lr_factor(progress, cfg)
                loss_sum.add_(train_step(t, idx, images, progress / (cfg.epochs * RESOLUTION), diverged))
                counter[0] += 1

        loop(iter(t.loader), warmup)
        first, second = iter(t.loader), iter(t.loader)  # iterators made outside the debug mode
        runs = iter([first, second])
        result = sync_check(lambda: loop(next(runs), checked))
        result.update(algorithm=algorithm, preset=preset, steps_checked=checked, batch_size=cfg.optim.batch_size,
                      loss_finite=not bool(diverged) and bool(torch.isfinite(loss_sum)))
        return result


def _kornia_reference() -> dict[str, Any]:
    """kornia's own modules (the view pipeline before issue 23), for comparison with the CPU count."""
    import kornia.augmentation as K

    ops = {
        "RandomResizedCrop": K.RandomResizedCrop((32, 32), scale=(0.08, 1.0)),
        "ColorJitter": K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        "RandomGaussianBlur": K.RandomGaussianBlur((3, 3), (0.1, 2.0), p=0.5),
        "RandomCrop(padding=4)": K.RandomCrop((32, 32), padding=4),
        "RandomRotation": K.RandomRotation(15.0, p=0.5),
        "RandomHorizontalFlip": K.RandomHorizontalFlip(p=0.5),
        "RandomGrayscale": K.RandomGrayscale(p=0.2),
    }
    x = torch.rand(128, 3, 32, 32, device=DEVICE)
    out = {}
    for name, op in ops.items():
        op = op.to(DEVICE)
        op(x)
        listed = _sync_warnings(lambda op=op: op(x))
        out[name] = {"synchronisations": len(listed), "where": sorted({w["where"][-1] for w in listed if w["where"]})}
    return out


def step_sync(ctx: Context) -> dict[str, Any]:
    result: dict[str, Any] = {"data": ctx.data}
    for algorithm, preset in (("simclr", "simclr"), ("moco", "mocov2"), ("supervised", "supervised")):
        try:
            result[algorithm] = _sync_one(ctx, algorithm, preset)
        except Exception as exc:  # the next algorithm still runs
            result[algorithm] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                                 "where": _frames(traceback.extract_tb(exc.__traceback__), 8)}
        ctx.save(result)
    try:
        result["kornia_reference"] = _kornia_reference()
    except Exception as exc:
        result["kornia_reference"] = {"error": f"{type(exc).__name__}: {exc}"}
    clean = all(result[a].get("synchronisations") == 0 for a in ("simclr", "moco", "supervised"))
    result["status"] = "ok" if clean else "failed"
    return result


# --------------------------------------------------------------------------- throughput
class _SslEmp:
    """The trainer's loop (loader, views on the GPU, ``train_step``) for GPU_CONFIG."""

    def __init__(self, ctx: Context, compile: bool, tmp: str):
        from ssl_emp.config import load_config
        from ssl_emp.run.folder import Run
        from ssl_emp.train import build

        overrides = [f"device={DEVICE}", f"model.compile={str(compile).lower()}", f"optim.batch_size={BATCH}",
                     "progress=false", "log_every=1000000", f"output_dir={tmp}", *_data_overrides(ctx.data)]
        self.t = build(load_config(GPU_CONFIG, overrides), Run(tmp, is_main=False))
        self.t.state.model.train()
        self.t.state.pruner.set_epoch(0)
        self.batches = iter(self.t.loader)
        self.diverged = torch.zeros((), dtype=torch.bool, device=self.t.device)

    def steps(self, n: int) -> None:
        from ssl_emp.train import train_step

        for _ in range(n):
            try:
                idx, images = next(self.batches)
            except StopIteration:
                self.batches = iter(self.t.loader)
                idx, images = next(self.batches)
            train_step(self.t, idx, images, 0.0, self.diverged)


class _PilImages(torch.utils.data.Dataset):
    """uint8 [N, 3, H, W] images as PIL images through a torchvision-style transform (lightly's way)."""

    def __init__(self, images: torch.Tensor, transform: Callable[[Any], Any]):
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i]))


def lightly_recipe(images: torch.Tensor, workers: int) -> tuple[torch.utils.data.DataLoader, Callable[[], Any]]:
    """lightly's SimCLR recipe for CIFAR-10 (its benchmark's transform: jitter strength 0.5, no
    blur): a DataLoader whose workers make both views, and a model factory (the project's ResNet-18
    CIFAR-stem backbone, ``SimCLRProjectionHead``, ``NTXentLoss``, SGD as GPU_CONFIG)."""
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform

    from ssl_emp.models import build_backbone

    transform = SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)
    loader = torch.utils.data.DataLoader(_PilImages(images, transform), batch_size=min(BATCH, len(images)), shuffle=True,
                                         drop_last=True, num_workers=workers, pin_memory=torch.cuda.is_available(),
                                         persistent_workers=workers > 0)

    def make() -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer]:
        model = torch.nn.Sequential(build_backbone("resnet18", cifar_stem=True), SimCLRProjectionHead(512, 512, 128))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.06 * BATCH / 256, momentum=0.9, weight_decay=5e-4)
        return model, NTXentLoss(temperature=0.5), optimizer

    return loader, make


class _Lightly:
    def __init__(self, loader: torch.utils.data.DataLoader, make: Callable[[], Any], compile: bool):
        model, self.criterion, self.optimizer = make()
        self.model = model.to(DEVICE)
        self.net = torch.compile(self.model) if compile else self.model
        self.loader, self.batches = loader, iter(loader)

    def steps(self, n: int) -> None:
        for _ in range(n):
            try:
                x0, x1 = next(self.batches)
            except StopIteration:
                self.batches = iter(self.loader)
                x0, x1 = next(self.batches)
            x0, x1 = x0.to(DEVICE, non_blocking=True), x1.to(DEVICE, non_blocking=True)
            with torch.autocast(DEVICE, dtype=torch.bfloat16):
                loss = self.criterion(self.net(x0), self.net(x1))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()


def _timed(runner: Any, steps: int) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    runner.steps(steps)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def step_throughput(ctx: Context, steps_per_round: int = 10, max_rounds: int = 5) -> dict[str, Any]:
    import statistics

    workers = max(1, (os.cpu_count() or 2) - 2)
    result: dict[str, Any] = {"data": ctx.data, "batch_size": BATCH, "image_size": 32, "steps_per_round": steps_per_round,
                              "lightly_workers": workers, "unit": "source images/s (two views each)", "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        runners: dict[str, Any] = {"ssl_emp": _SslEmp(ctx, False, tmp)}
        images = runners["ssl_emp"].t.data.train.images
        result["ssl_emp_loader_workers"] = runners["ssl_emp"].t.cfg.data.num_workers
        loader, make = lightly_recipe(images, workers)
        runners["lightly"] = _Lightly(loader, make, compile=False)
        runners["ssl_emp_compile"] = _SslEmp(ctx, True, tmp)
        runners["lightly_compile"] = _Lightly(loader, make, compile=True)  # one loader: the same workers feed both
        for name, runner in runners.items():  # warm-up: compilation, cuDNN plans, the workers' first batches
            t0 = time.perf_counter()
            runner.steps(3)
            torch.cuda.synchronize()
            result["variants"][name] = {"warmup_s": round(time.perf_counter() - t0, 1), "images_per_s": []}
            ctx.save(result)
        for _ in range(max_rounds):  # interleaved: each round times every variant once
            if ctx.left() < 4 * 3 * steps_per_round * 0.1 + 10:
                break
            for name, runner in runners.items():
                result["variants"][name]["images_per_s"].append(round(BATCH * steps_per_round / _timed(runner, steps_per_round)))
            ctx.save(result)
        runners.clear()  # the loaders' workers stop here, not at interpreter exit
    for v in result["variants"].values():
        v["median_images_per_s"] = statistics.median(v["images_per_s"]) if v["images_per_s"] else None
    medians = {k: v["median_images_per_s"] for k, v in result["variants"].items()}
    if medians.get("ssl_emp") and medians.get("lightly"):
        result["ssl_emp_over_lightly"] = round(medians["ssl_emp"] / medians["lightly"], 2)
    if medians.get("ssl_emp_compile") and medians.get("lightly_compile"):
        result["ssl_emp_over_lightly_compiled"] = round(medians["ssl_emp_compile"] / medians["lightly_compile"], 2)
    result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    result["status"] = "ok" if all(medians.values()) else "failed"
    return result


# --------------------------------------------------------------------------- faiss, two epochs, pytest
def step_faiss(ctx: Context, bank: int = 50_000, queries: int = 10_000, dim: int = 512, classes: int = 10, k: int = 200) -> dict[str, Any]:
    import faiss

    from ssl_emp.eval.knn import knn_predict

    if not hasattr(faiss, "StandardGpuResources"):
        return {"status": "skipped", "note": "faiss-gpu not installed", "faiss": faiss.__version__}
    g = torch.Generator().manual_seed(0)  # clustered features, so that the vote does real work
    centres = torch.randn(classes, dim, generator=g)
    train_y, test_y = torch.randint(0, classes, (bank,), generator=g), torch.randint(0, classes, (queries,), generator=g)
    train_x = centres[train_y] + 15.0 * torch.randn(bank, dim, generator=g)
    test_x = centres[test_y] + 15.0 * torch.randn(queries, dim, generator=g)
    out: dict[str, Any] = {"bank": bank, "queries": queries, "dim": dim, "k": k, "faiss": faiss.__version__,
                           "gpus_seen_by_faiss": faiss.get_num_gpus()}
    preds = {}
    for name, use_gpu in (("cpu", False), ("gpu", True)):
        t0 = time.perf_counter()
        scores = knn_predict(train_x, train_y, test_x, k=k, use_gpu=use_gpu)
        out[f"{name}_seconds"] = round(time.perf_counter() - t0, 2)
        preds[name] = scores.argmax(dim=1)
        out[f"{name}_top1"] = float((preds[name] == test_y).double().mean())
    out["top1_disagreements"] = int((preds["cpu"] != preds["gpu"]).sum())
    out["identical_top1"] = out["top1_disagreements"] == 0
    out["status"] = "ok" if out["identical_top1"] else "failed"
    return out


def two_epoch_overrides(data: str) -> list[str]:
    # The config warms up for 10 of its 200 epochs, longer than this run: warm up over both epochs.
    return [f"device={DEVICE}", "epochs=2", "optim.warmup_epochs=2", "progress=false", *_data_overrides(data)]


def step_two_epochs(ctx: Context) -> dict[str, Any]:
    from ssl_emp.config import load_config
    from ssl_emp.train import pretrain

    if ctx.data is None or ctx.data.startswith("synthetic:"):
        return {"status": "skipped", "note": "the CIFAR-10 archive was not found (pass --data)"}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(GPU_CONFIG, [*two_epoch_overrides(ctx.data), f"output_dir={tmp}"])
        torch.cuda.reset_peak_memory_stats()
        summary = pretrain(cfg)
        from ssl_emp.run.layout import RunLayout

        records = [json.loads(line) for line in RunLayout(tmp).metrics.read_text().splitlines() if line.strip()]
    epochs = [r for r in records if r.get("epoch", -1) >= 0]
    return {
        "status": "ok" if summary.get("knn_top1") is not None else "failed", "config": str(GPU_CONFIG.relative_to(ROOT)),
        "overrides": two_epoch_overrides(ctx.data),
        "images": summary.get("num_samples"), "epoch_time_s": [round(r["epoch_time_s"], 1) for r in epochs],
        "images_per_s": [round(r["images_per_s"]) for r in epochs], "loss": [round(r["loss"], 4) for r in epochs],
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "knn_top1": summary.get("knn_top1"), "knn_top5": summary.get("knn_top5"),
        "knn_top1_epoch0": summary.get("knn_top1_epoch0"), "wall_time_s": summary.get("wall_time_s"),
        "eval_time_s": summary.get("eval_time_s"),
    }


def step_pytest_cuda(ctx: Context) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", str(ROOT / "tests")]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(5.0, ctx.left() - 3))
    except subprocess.TimeoutExpired as exc:
        return {"status": "timeout", "output_tail": _tail((exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or "")}
    summary = next((line for line in reversed(proc.stdout.splitlines()) if re.search(r"\d+ (passed|failed|skipped|deselected)", line)), "")
    ran = re.search(r"(\d+) passed", summary)
    ok = proc.returncode == 0 and ran is not None and "skipped" not in summary  # a skipped CUDA test did not run
    return {"status": "ok" if ok else "failed", "rc": proc.returncode, "summary": summary.strip("= "),
            "output_tail": _tail(proc.stdout + proc.stderr, 15)}


PLAN = {
    "pytest_cuda": "pytest -m cuda",
    "sync": "a SimCLR, MoCo and supervised EMP step under sync-debug error mode",
    "throughput": "ssl-emp vs lightly SimCLR, ResNet-18, batch 512, bf16, eager and compiled",
    "faiss": "faiss-gpu kNN vs the CPU index",
    "two_epochs": "2 epochs of cifar10_simclr_resnet18.yaml on CIFAR-10",
}
STEPS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "pytest_cuda": step_pytest_cuda, "sync": step_sync, "throughput": step_throughput,
    "faiss": step_faiss, "two_epochs": step_two_epochs,
}


# --------------------------------------------------------------------------- dry run, main
def dry_run(data: str | None) -> str:
    """Everything on the CPU up to the first CUDA call; returns the line saying what would run."""
    import faiss
    from PIL import Image

    from ssl_emp.augment import eval_transform, view_augmentation
    from ssl_emp.config import load_config
    from ssl_emp.data import load_data
    from ssl_emp.models import build_model

    markers = (ROOT / "pyproject.toml").read_text()
    if '"cuda:' not in markers:
        raise SystemExit("gpu_check --dry-run: the 'cuda' pytest marker is not registered in pyproject.toml")
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        folder = synthetic_folder(Path(tmp) / "images", classes=2, train=4, test=2)
        spec = data or f"synthetic:{folder}"
        for algorithm, preset in (("simclr", "simclr"), ("moco", "mocov2"), ("supervised", "supervised")):
            cfg = load_config(SYNC_CONFIG, ["device=cuda", f"algorithm={algorithm}", f"augment.preset={preset}",
                                            "pruning.method=emp", "pruning.rate=0.3", *_data_overrides(spec)])
            build_model(cfg.algorithm, cfg.model, num_classes=10)
            assert view_augmentation(cfg.augment, 32)(x).shape == (4, 3, 32, 32)
        gpu_cfg = load_config(GPU_CONFIG, two_epoch_overrides(spec))
        build_model(gpu_cfg.algorithm, gpu_cfg.model)
        eval_transform(gpu_cfg.augment, 32)(x)
        tiny = load_data(load_config(None, ["data.image_size=32", "data.cache_dir=" + tmp + "/cache",
                                            *_data_overrides(f"synthetic:{folder}")]).data)
        loader, make = lightly_recipe(tiny.train.images, workers=0)
        x0, x1 = next(iter(loader))
        model, criterion, _ = make()
        criterion(model(x0), model(x1)).backward()
        Image.fromarray(x[0].permute(1, 2, 0).numpy())  # PIL, as lightly's workers use
    gpu_faiss = "faiss-gpu" if hasattr(faiss, "StandardGpuResources") else "faiss-gpu not installed: recorded as such"
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


def main(argv: list[str] | None = None) -> int:
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
    if args.step:
        ctx = Context(args.deadline, args.data, Path(args.result))
        ctx.save({"status": "failed", "reason": "started, did not finish"})
        ctx.save(STEPS[args.step](ctx))
        return 0
    if args.dry_run:
        archive = find_archive(args.data)
        print(dry_run(str(archive) if archive else None))
        return 0
    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}); "
              "nothing run (--dry-run builds the CPU part)")
        return 2
    with tempfile.TemporaryDirectory(prefix="gpu_check_data_") as tmp:
        data, data_note = _prepare_data(args, Path(tmp))
        record = {**_header(data), "data_preparation": data_note, "budget_s": args.budget, "steps": {}}
        slug = re.sub(r"[^A-Za-z0-9]+", "-", record["device"]).strip("-")
        output = Path(args.output) if args.output else (
            ROOT / "benchmarks" / "results" / "gpu" / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}_{slug}.json")

        def save(steps: dict[str, Any]) -> None:
            record["steps"] = steps
            _write_json(output, record)

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


if __name__ == "__main__":
    sys.exit(main())
