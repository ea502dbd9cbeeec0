"""The ``throughput`` step: ssl-emp's SimCLR step (views made on the GPU) against lightly's own
SimCLR recipe (torchvision transforms in DataLoader workers), eager and compiled, interleaved rounds."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from . import context
from .context import BATCH, GPU_CONFIG, Context, data_overrides, trainer


class _SslEmp:
    """The trainer's loop (loader, views on the GPU, ``train_step``) for GPU_CONFIG."""

    def __init__(self, ctx: Context, compile: bool, tmp: str):
        overrides = [f"device={context.DEVICE}", f"model.compile={str(compile).lower()}", f"optim.batch_size={BATCH}",
                     "progress=false", "log_every=1000000", *data_overrides(ctx.data)]
        self.t = trainer(GPU_CONFIG, overrides, tmp)
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
        self.model = model.to(context.DEVICE)
        self.net = torch.compile(self.model) if compile else self.model
        self.loader, self.batches = loader, iter(loader)

    def steps(self, n: int) -> None:
        for _ in range(n):
            try:
                x0, x1 = next(self.batches)
            except StopIteration:
                self.batches = iter(self.loader)
                x0, x1 = next(self.batches)
            x0, x1 = x0.to(context.DEVICE, non_blocking=True), x1.to(context.DEVICE, non_blocking=True)
            with torch.autocast(context.DEVICE, dtype=torch.bfloat16):
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


def _runners(ctx: Context, tmp: str, workers: int, result: dict[str, Any]) -> dict[str, Any]:
    """The four variants, in the order each round times them."""
    runners: dict[str, Any] = {"ssl_emp": _SslEmp(ctx, False, tmp)}
    images = runners["ssl_emp"].t.data.train.images
    result["ssl_emp_loader_workers"] = runners["ssl_emp"].t.cfg.data.num_workers
    loader, make = lightly_recipe(images, workers)
    runners["lightly"] = _Lightly(loader, make, compile=False)
    runners["ssl_emp_compile"] = _SslEmp(ctx, True, tmp)
    runners["lightly_compile"] = _Lightly(loader, make, compile=True)  # one loader: the same workers feed both
    return runners


def _warm_up(ctx: Context, runners: dict[str, Any], result: dict[str, Any]) -> None:
    """Compilation, cuDNN plans, the workers' first batches: timed, not counted."""
    for name, runner in runners.items():
        t0 = time.perf_counter()
        runner.steps(3)
        torch.cuda.synchronize()
        result["variants"][name] = {"warmup_s": round(time.perf_counter() - t0, 1), "images_per_s": []}
        ctx.save(result)


def _rounds(ctx: Context, runners: dict[str, Any], result: dict[str, Any], steps_per_round: int, max_rounds: int) -> None:
    """Interleaved: each round times every variant once, while the deadline leaves room for one more."""
    for _ in range(max_rounds):
        if ctx.left() < 4 * 3 * steps_per_round * 0.1 + 10:
            break
        for name, runner in runners.items():
            result["variants"][name]["images_per_s"].append(round(BATCH * steps_per_round / _timed(runner, steps_per_round)))
        ctx.save(result)


def _summarise(result: dict[str, Any]) -> None:
    """Medians, the ssl-emp / lightly ratios, peak memory and the status."""
    for v in result["variants"].values():
        v["median_images_per_s"] = statistics.median(v["images_per_s"]) if v["images_per_s"] else None
    medians = {k: v["median_images_per_s"] for k, v in result["variants"].items()}
    if medians.get("ssl_emp") and medians.get("lightly"):
        result["ssl_emp_over_lightly"] = round(medians["ssl_emp"] / medians["lightly"], 2)
    if medians.get("ssl_emp_compile") and medians.get("lightly_compile"):
        result["ssl_emp_over_lightly_compiled"] = round(medians["ssl_emp_compile"] / medians["lightly_compile"], 2)
    result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    result["status"] = "ok" if all(medians.values()) else "failed"


def step_throughput(ctx: Context, steps_per_round: int = 10, max_rounds: int = 5) -> dict[str, Any]:
    workers = max(1, (os.cpu_count() or 2) - 2)
    result: dict[str, Any] = {"data": ctx.data, "batch_size": BATCH, "image_size": 32, "steps_per_round": steps_per_round,
                              "lightly_workers": workers, "unit": "source images/s (two views each)", "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        runners = _runners(ctx, tmp, workers, result)
        _warm_up(ctx, runners, result)
        _rounds(ctx, runners, result, steps_per_round, max_rounds)
        runners.clear()  # the loaders' workers stop here, not at interpreter exit
    _summarise(result)
    return result
