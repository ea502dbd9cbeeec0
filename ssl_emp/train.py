"""The pretraining loop: kept indices -> (index, images) -> views on device -> encoder ->
per-sample (loss, align) -> pruner -> next epoch's kept indices.

Single process on CPU or one GPU; several GPUs or nodes when launched by ``torchrun`` (DDP).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict
from typing import Any

import timm.optim
import torch
import torch.distributed as dist
from lightly.utils.scheduler import cosine_schedule, cosine_warmup_schedule
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ssl_emp.augment import eval_transform, view_augmentation
from ssl_emp.checkpoint import load_checkpoint, save_atomic
from ssl_emp.config import Config, config_from_dict, finalize, save_config
from ssl_emp.data import DataSplits, Labelled, load_data
from ssl_emp.errors import ConfigError, TrainingDiverged
from ssl_emp.eval import extract_features, knn_accuracy
from ssl_emp.models import MoCo, build_model
from ssl_emp.pruning import DynamicPruner
from ssl_emp.rundir import Run

# Schedules are functions of the fraction of the run done, in units of 1/RESOLUTION epoch, so a
# pruned run (fewer steps per epoch) still walks its whole LR / momentum schedule over the steps
# it actually takes.
RESOLUTION = 1000
TIMM_OPT = {"sgd": "momentum", "lars": "lars", "adamw": "adamw"}  # timm's "sgd" means Nesterov


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist.is_initialized():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def versions() -> dict[str, str]:
    import faiss
    import kornia
    import lightly
    import timm
    import torchvision

    import ssl_emp

    return {
        "ssl_emp": ssl_emp.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "lightly": lightly.__version__, "kornia": kornia.__version__, "timm": timm.__version__,
        "faiss": faiss.__version__, "python": platform.python_version(),
    }


def machine() -> str:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {gpu}"


def lr_factor(progress: int, cfg: Config) -> float:
    total = cfg.epochs * RESOLUTION
    warmup = int(cfg.optim.warmup_epochs * RESOLUTION)
    return cosine_warmup_schedule(min(progress, total), total, 1.0, 0.0, warmup, 0.0)


def knn_monitor(backbone: nn.Module, data: DataSplits, cfg: Config, device: torch.device) -> dict[str, float]:
    """kNN top-1/top-5 of backbone features: train split as the bank, test split as queries."""
    if data.bank is None or data.test is None:
        return {}
    transform = eval_transform(cfg.augment, cfg.data.image_size).to(device)
    feats = []
    for split in (data.bank, data.test):
        loader = DataLoader(Labelled(split), batch_size=cfg.eval.batch_size, num_workers=cfg.data.num_workers)
        feats.append(extract_features(backbone, loader, device=device, transform=transform))
    (train_x, train_y), (test_x, test_y) = feats
    k = min(cfg.eval.knn_k, len(train_y))
    result = knn_accuracy(train_x, train_y, test_x, test_y, k=k, temperature=cfg.eval.knn_temperature)
    return {"knn_top1": result["top1"], "knn_top5": result["top5"]}


def pretrain(cfg: Config, resume: bool = False) -> dict[str, Any]:
    """Pretrain an encoder as configured; returns the summary (also written to summary.json)."""
    finalize(cfg)
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    with Run(cfg.output_dir, rank == 0) as run:  # rank 0 holds the folder's lock for the whole run
        return _pretrain(cfg, run, resume, distributed, world)


def _pretrain(cfg: Config, run: Run, resume: bool, distributed: bool, world: int) -> dict[str, Any]:
    ckpt = None
    if resume:
        if not run.last.is_file():
            started = (run.dir / "config.yaml").is_file()
            raise ConfigError(f"no checkpoint to resume in {run.dir}" + (
                " (the run stopped before its first epoch ended); rerun the same command without --resume "
                "to start it again" if started else f" (no {run.last})"))
        ckpt = load_checkpoint(run.last)
        saved = config_from_dict(ckpt["config"])
        saved.device, saved.progress, saved.output_dir = cfg.device, cfg.progress, cfg.output_dir
        if asdict(saved) != asdict(cfg):
            diff = _diff(asdict(saved), asdict(cfg))
            raise ConfigError(f"--resume with a config that differs from the checkpoint's: {', '.join(diff)}")
    elif run.has_checkpoint():
        raise ConfigError(f"{run.dir} already holds a run; pass --resume to continue it or choose another --output-dir")
    device = resolve_device(cfg.device)

    data = load_data(cfg.data)
    n = len(data.train)
    if cfg.optim.batch_size * world > n:
        raise ConfigError(f"optim.batch_size {cfg.optim.batch_size} (x{world} ranks) is larger than the data set ({n} images)")
    torch.manual_seed(cfg.seed)  # once, at the start of a run: model init and augmentations
    model = build_model(cfg.algorithm, cfg.model, gather_distributed=distributed).to(device)
    net: nn.Module = nn.parallel.DistributedDataParallel(model) if distributed else model
    optimizer = timm.optim.create_optimizer_v2(
        model, opt=TIMM_OPT[cfg.optim.name], lr=cfg.optim.lr * cfg.optim.batch_size * world / 256,
        weight_decay=cfg.optim.weight_decay, momentum=cfg.optim.momentum,
    )
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    pruner = DynamicPruner(num_samples=n, method=cfg.pruning.method, pruning_rate=cfg.pruning.rate,
                           epochs=cfg.epochs, seed=cfg.seed, **cfg.pruning.params)
    loader = DataLoader(data.train, batch_size=cfg.optim.batch_size, sampler=pruner.sampler(),
                        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.data.num_workers > 0)
    augment = view_augmentation(cfg.augment, cfg.data.image_size).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    start_epoch, wall_before, eval_time, pruner_time, history = 0, 0.0, 0.0, 0.0, []
    t_start = time.perf_counter()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        pruner.load_state_dict(ckpt["pruner"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
        start_epoch, wall_before = ckpt["epoch"] + 1, ckpt["wall_time"]
        eval_time, pruner_time = ckpt["eval_time"], ckpt["pruner_time"]
        history = ckpt["knn_history"]
        run.truncate_logs(ckpt["epoch"])
    elif run.is_main:
        run.reset_unstarted()
        save_config(cfg, run.dir / "config.yaml")
        t_eval = time.perf_counter()
        metrics = knn_monitor(model.backbone, data, cfg, device)
        eval_time += time.perf_counter() - t_eval
        if metrics:
            history.append({"epoch": -1, **metrics})
            run.log("metrics.jsonl", json.dumps({"epoch": -1, **metrics}))
            _echo(f"epoch 0 (before training): kNN top-1 {metrics['knn_top1']:.4f}")
        run.log("steps.csv", "step,epoch,lr,loss")

    for epoch in range(start_epoch, cfg.epochs):
        t_pruner = time.perf_counter()
        pruner.set_epoch(epoch)
        pruner_time += time.perf_counter() - t_pruner
        model.train()
        steps_this_epoch = len(loader)
        loss_sum = torch.zeros((), device=device)
        seen, steps, t_epoch = 0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and run.is_main), leave=False)
        for i, (idx, images) in enumerate(bar):
            if len(idx) < 2:  # a batch of one has no negatives and breaks batch norm; skip it
                continue
            progress = epoch * RESOLUTION + (i * RESOLUTION) // steps_this_epoch
            factor = lr_factor(progress, cfg)
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * factor
            if isinstance(model, MoCo):
                m = cosine_schedule(progress, cfg.epochs * RESOLUTION, cfg.model.momentum_start, cfg.model.momentum_end)
                model.momentum_update(m)
            images = images.to(device, non_blocking=True)
            with torch.no_grad():
                view1, view2 = augment(images), augment(images)
            with autocast:
                loss_i, align_i = net(view1, view2)
            loss_i = loss_i.float()
            if not torch.isfinite(loss_i).all():
                raise TrainingDiverged(
                    f"non-finite loss at epoch {epoch + 1}, step {i + 1}; stopped, "
                    f"the last good checkpoint is {run.last if run.last.exists() else 'none (diverged in epoch 1)'}"
                )
            t_pruner = time.perf_counter()
            weights = pruner.update(idx, loss=loss_i.detach(), align=align_i.detach())
            pruner_time += time.perf_counter() - t_pruner
            loss = (weights * loss_i).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            seen += len(idx)
            steps += 1
            if (i + 1) % cfg.log_every == 0:
                value = loss.item()
                bar.set_postfix(loss=f"{value:.3f}", img_s=f"{seen * world / (time.perf_counter() - t_epoch):.0f}")
                step = pruner.stats()["optimizer_steps"]
                run.log("steps.csv", f"{step},{epoch},{optimizer.param_groups[0]['lr']:.6g},{value:.6f}")
        bar.close()

        epoch_time = time.perf_counter() - t_epoch
        record: dict[str, Any] = {
            "epoch": epoch, "loss": loss_sum.item() / max(steps, 1), "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": seen * world / epoch_time, "epoch_time_s": epoch_time,
            **{f"pruning/{k}": v for k, v in pruner.epoch_diagnostics().items()},
        }
        last_epoch = epoch == cfg.epochs - 1
        # Rank 0 evaluates; the other ranks wait for it at the next collective.
        if run.is_main and (cfg.eval.eval_every and (epoch + 1) % cfg.eval.eval_every == 0 or last_epoch):
            t_eval = time.perf_counter()
            metrics = knn_monitor(model.backbone, data, cfg, device)
            eval_time += time.perf_counter() - t_eval
            record.update(metrics)
            if metrics:
                history.append({"epoch": epoch, **metrics})
        run.log("metrics.jsonl", json.dumps(record))
        _echo(f"epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f}, {record['images_per_s']:.0f} img/s"
              + (f", kNN top-1 {record['knn_top1']:.4f}" if "knn_top1" in record else ""), run.is_main)
        wall = wall_before + time.perf_counter() - t_start
        if run.is_main:
            save_atomic({
                "config": asdict(cfg), "epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "pruner": pruner.state_dict(),
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
                "wall_time": wall, "eval_time": eval_time, "pruner_time": pruner_time, "knn_history": history,
            }, run.last)

    wall = wall_before + time.perf_counter() - t_start
    stats = pruner.stats()
    final = history[-1] if history else {}
    summary = {
        "knn_top1": final.get("knn_top1"), "knn_top5": final.get("knn_top5"),
        "knn_top1_epoch0": history[0]["knn_top1"] if history and history[0]["epoch"] == -1 else None,
        "wall_time_s": wall, "eval_time_s": eval_time, "train_time_s": wall - eval_time,
        "pruner_time_s": pruner_time, "images_seen": stats["sample_visits"], "optimizer_steps": stats["optimizer_steps"],
        "pruning_method": cfg.pruning.method, "target_rate": cfg.pruning.rate, "achieved_rate": stats["achieved_rate"],
        "knn_split": "validation (held out of train)" if data.test_is_validation else "test",
        "num_samples": n, "epochs": cfg.epochs, "algorithm": cfg.algorithm, "world_size": world,
        "device": str(device), "machine": machine(), "versions": versions(),
    }
    run.write_final(summary, pruner, data.train.labels.tolist() if data.train.labels is not None else None)
    return summary


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in a:
        if isinstance(a[key], dict) and isinstance(b.get(key), dict) and key not in ("backbone_kwargs", "params"):
            out += _diff(a[key], b[key], f"{prefix}{key}.")
        elif a[key] != b.get(key):
            out.append(f"{prefix}{key} ({a[key]!r} -> {b.get(key)!r})")
    return out


def _echo(message: str, is_main: bool = True) -> None:
    if is_main:
        tqdm.write(message)


