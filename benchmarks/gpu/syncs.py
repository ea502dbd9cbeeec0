"""The ``sync`` step: one training step each of SimCLR, MoCo and supervised with EMP pruning under
``torch.cuda.set_sync_debug_mode("error")`` on non-logging steps, and kornia's modules for reference."""

from __future__ import annotations

import tempfile
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import torch

from . import context
from .context import ROOT, SYNC_CONFIG, Context, data_overrides, trainer

ALGORITHMS = (("simclr", "simclr"), ("moco", "mocov2"), ("supervised", "supervised"))  # with their view presets


def _frames(stack: list[traceback.FrameSummary], keep: int = 6) -> list[str]:
    """The innermost frames outside this module's helpers and the warnings module, shortened."""
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


def _loop(t: Any, diverged: torch.Tensor, loss_sum: torch.Tensor) -> Callable[[Any, int], None]:
    """``loop(batches, n)``: n steps of train_one_epoch's body without its logging branch."""
    from ssl_emp.train import RESOLUTION, lr_factor, train_step

    cfg, steps = t.cfg, len(t.loader)
    counter = [0]

    def loop(batches: Any, n: int) -> None:
        for _ in range(n):
            idx, images = next(batches)
            progress = (counter[0] * RESOLUTION) // steps
            for group, base in zip(t.state.optimizer.param_groups, t.base_lrs, strict=True):
                group["lr"] = base * lr_factor(progress, cfg)
            loss_sum.add_(train_step(t, idx, images, progress / (cfg.epochs * RESOLUTION), diverged))
            counter[0] += 1

    return loop


def _sync_one(ctx: Context, algorithm: str, preset: str, warmup: int = 2, checked: int = 3) -> dict[str, Any]:
    """Non-logging steps of the training loop (next batch, schedule, ``train_step``, loss sum) of
    one algorithm with EMP, after ``warmup`` steps that may sync (lazy CUDA init, optimizer state)."""
    overrides = [f"device={context.DEVICE}", f"algorithm={algorithm}", f"augment.preset={preset}", "pruning.method=emp",
                 "pruning.rate=0.3", "log_every=1000000", "progress=false", *data_overrides(ctx.data)]
    with tempfile.TemporaryDirectory() as tmp:
        t = trainer(SYNC_CONFIG, overrides, tmp)
        t.state.model.train()
        t.state.pruner.set_epoch(0)
        diverged = torch.zeros((), dtype=torch.bool, device=t.device)
        loss_sum = torch.zeros((), device=t.device)
        loop = _loop(t, diverged, loss_sum)
        loop(iter(t.loader), warmup)
        first, second = iter(t.loader), iter(t.loader)  # iterators made outside the debug mode
        runs = iter([first, second])
        result = sync_check(lambda: loop(next(runs), checked))
        result.update(algorithm=algorithm, preset=preset, steps_checked=checked, batch_size=t.cfg.optim.batch_size,
                      loss_finite=not bool(diverged) and bool(torch.isfinite(loss_sum)))
        return result


def _kornia_reference() -> dict[str, Any]:
    """kornia's own modules (the view pipeline before the functional ops), for comparison with the CPU count."""
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
    x = torch.rand(128, 3, 32, 32, device=context.DEVICE)
    out = {}
    for name, op in ops.items():
        op = op.to(context.DEVICE)
        op(x)
        listed = _sync_warnings(lambda op=op: op(x))
        out[name] = {"synchronisations": len(listed), "where": sorted({w["where"][-1] for w in listed if w["where"]})}
    return out


def step_sync(ctx: Context) -> dict[str, Any]:
    result: dict[str, Any] = {"data": ctx.data}
    for algorithm, preset in ALGORITHMS:
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
    clean = all(result[a].get("synchronisations") == 0 for a, _ in ALGORITHMS)
    result["status"] = "ok" if clean else "failed"
    return result
