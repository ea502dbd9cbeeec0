"""The pretraining loop: kept indices -> (index, images) -> views on device -> model -> per-sample
loss and pruner signals -> pruner weights -> optimizer step; next epoch's kept set from the pruner.

Single process on CPU or one GPU; several GPUs or nodes when launched by ``torchrun`` (DDP). The
loop knows the model only through the contract in ``ssl_emp.models`` and never reads a device
value back to the host outside logging steps (every ``log_every`` steps) and epoch ends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from lightly.utils.scheduler import cosine_warmup_schedule
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ssl_emp import distributed
from ssl_emp.augment import crop_scale, view_augmentation
from ssl_emp.config import Config, finalize
from ssl_emp.curate.embed import pruning_embeddings
from ssl_emp.data import DataSplits, check_classes, load_data
from ssl_emp.data.dali import DaliViews
from ssl_emp.data.datasets import IndexedImageFiles, loader_generator
from ssl_emp.data.fingerprint import data_fingerprint, split_fingerprint
from ssl_emp.data.redundancy import redundancy_diagnostics
from ssl_emp.data.source import ImageSource
from ssl_emp.data.views import CroppedViews, EpochTagged, cuts_views
from ssl_emp.errors import ConfigError, TrainingDiverged
from ssl_emp.eval.monitor import monitors
from ssl_emp.logger import MetricsSink, Sinks, build_sinks, check_sinks
from ssl_emp.models import build_model
from ssl_emp.progress import progress_enabled, show_progress
from ssl_emp.pruning import DynamicPruner
from ssl_emp.pruning.curation import EMBEDDINGS
from ssl_emp.pruning.sampler import FoldedBatchSampler
from ssl_emp.run.files import atomic_torch_save, atomic_write_text
from ssl_emp.run.folder import Run
from ssl_emp.run.lifecycle import check_data, finish_run, open_run, start_run
from ssl_emp.run.state import TrainState
from ssl_emp.run.summary import epoch_diagnostics
from ssl_emp.runtime import build_optimizer, memory_format, resolve_device, set_threads

# Schedules are functions of the fraction of the run done, in units of 1/RESOLUTION epoch, so a
# pruned run (fewer steps per epoch) still walks its whole LR / momentum schedule over the steps
# it actually takes.
RESOLUTION = 1000


def lr_factor(progress: int, cfg: Config) -> float:
    total = cfg.epochs * RESOLUTION
    warmup = int(cfg.optim.warmup_epochs * RESOLUTION)
    return cosine_warmup_schedule(min(progress, total), total, 1.0, 0.0, warmup, 0.0)


@dataclass
class Trainer:
    """A built run: configuration, data, the state and what a step needs beside it."""

    cfg: Config
    run: Run
    data: DataSplits
    device: torch.device
    world: int
    state: TrainState
    net: nn.Module  # the model as stepped: wrapped by DDP and/or torch.compile as configured
    loader: DataLoader | DaliViews
    augment: nn.Module
    base_lrs: list[float]
    labels: Tensor | None  # train labels on the device, only for a model that needs them
    autocast: torch.autocast
    memory_format: torch.memory_format
    sinks: Sinks = field(default_factory=lambda: Sinks([]))  # set by pretrain once it knows where the run starts
    embeddings: dict[str, Any] | None = None  # pruning.embeddings' record and sha1, when the method reads them


def build(cfg: Config, run: Run) -> Trainer:
    """Data, model (seeded), optimizer, pruner, loader and view pipeline for ``cfg``."""
    world = distributed.world_size()
    device = resolve_device(cfg.device)
    for key in ("gather_distributed", "channels_last", "compile"):
        if not isinstance(getattr(cfg.model, key), bool):
            raise ConfigError(f"model.{key} must be true or false, got {getattr(cfg.model, key)!r}")
    with progress_enabled(cfg.progress and run.is_main):
        data = load_data(cfg.data)
    n = len(data.train)
    if cfg.optim.batch_size * world > n:
        raise ConfigError(f"optim.batch_size {cfg.optim.batch_size} (x{world} ranks) is larger than the data set ({n} images)")
    torch.manual_seed(cfg.seed)  # once, at the start of a run: model init and augmentations
    classes = data.train.classes
    model = build_model(cfg.algorithm, cfg.model, gather_distributed=cfg.model.gather_distributed and world > 1,
                        num_classes=len(classes) if classes else None)
    layout = memory_format(model, device, cfg.model.channels_last)
    model = model.to(device, memory_format=layout)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.model.compile:
        net = torch.compile(net)
    labels = None
    if model.needs_labels:
        if data.train.labels is None:
            raise ConfigError(f"algorithm '{cfg.algorithm}' needs labels; data set '{cfg.data.dataset}' has none")
        labels = data.train.labels.to(device)
    optimizer = build_optimizer(model, cfg.optim, world)
    inputs, embeddings = None, None
    if cfg.pruning.embeddings is not None:  # a curation method's input (ssl_emp.pruning.curation)
        emb, embeddings = pruning_embeddings(cfg.pruning.embeddings, n, split_fingerprint(cfg.data))
        inputs = {EMBEDDINGS: emb}
    pruner = DynamicPruner(num_samples=n, method=cfg.pruning.method, pruning_rate=cfg.pruning.rate,
                           epochs=cfg.epochs, seed=cfg.seed, objective=model.objective, signals=model.signals,
                           inputs=inputs, **cfg.pruning.params)
    if pruner.budget is not None and -(-pruner.budget // world) < 2:
        raise ConfigError(f"pruning.rate {cfg.pruning.rate} keeps {pruner.budget} images: fewer than 2 per rank")
    size = cfg.data.image_size
    loader, cut = train_loader(cfg, data.train, pruner, model.num_views, device)
    return Trainer(
        cfg=cfg, run=run, data=data, device=device, world=world,
        state=TrainState(model, optimizer, pruner, device), net=net, loader=loader,
        augment=view_augmentation(cfg.augment, size, crop=not cut).to(device),
        base_lrs=[g["lr"] for g in optimizer.param_groups], labels=labels,
        autocast=torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"),
        memory_format=layout, embeddings=embeddings,
    )


def train_loader(cfg: Config, train: ImageSource, pruner: DynamicPruner, views: int,
                 device: torch.device) -> tuple[DataLoader | DaliViews, bool]:
    """The epoch's kept set in batches, ``(index, images)``, and whether its views come already cut:
    CIFAR-sized images whole (cut on the device), photographs' views cut in the DataLoader workers
    (``ssl_emp.data.views``), or decoded and cut by DALI (``ssl_emp.data.dali``)."""
    size, scale = cfg.data.image_size, crop_scale(cfg.augment, cfg.data.image_size)
    batches = FoldedBatchSampler(pruner.sampler(), cfg.optim.batch_size)
    if cfg.data.backend == "dali":
        if not isinstance(train, IndexedImageFiles):
            raise ConfigError(f"data.backend=dali reads image files; this training set ({type(train).__name__}) has none")
        return DaliViews(train.files, EpochTagged(batches, lambda: pruner.epoch), views, size, scale, cfg.seed,
                         device, threads=max(1, cfg.data.num_workers)), True
    dataset: Dataset = train
    cut = cuts_views(train, size)
    if cut:  # photographs: each view cut from the image's own pixels in the workers
        dataset = CroppedViews(train, views, size, scale, cfg.seed)
        batches = EpochTagged(batches, lambda: pruner.epoch)
    return DataLoader(dataset, batch_sampler=batches, num_workers=cfg.data.num_workers,
                      pin_memory=device.type == "cuda", persistent_workers=cfg.data.num_workers > 0,
                      generator=loader_generator(cfg.seed)), cut


def record_embeddings(t: Trainer, resumed: bool) -> None:
    """Write RUN/embeddings.json: the embeddings the method selected from (path, sha1, their record)
    and what its rule reported (SemDeDup's implied ε). A resumed run must read the same file."""
    if t.embeddings is None:
        return
    path = t.run.layout.embeddings
    if resumed and path.is_file():
        saved = json.loads(path.read_text()).get("sha1")
        if saved != t.embeddings["sha1"]:
            raise ConfigError(f"--resume with other pruning.embeddings than the run started with (sha1 {saved}, "
                              f"now {t.embeddings['sha1']}): {t.embeddings['path']}")
    if t.run.is_main:
        record = {**t.embeddings, "selection": t.state.pruner.selection_info}
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def train_step(t: Trainer, idx: Tensor, images: Tensor, progress: float, diverged: Tensor) -> Tensor:
    """One optimizer step on a batch; returns the weighted loss (on the device, detached).

    No host sync: ``diverged`` (a device bool) accumulates whether any per-sample loss was not
    finite, and the caller reads it only on logging steps and at the epoch's end.
    """
    model, pruner, optimizer = t.state.model, t.state.pruner, t.state.optimizer
    model.on_train_step(progress)
    images = images.to(t.device, non_blocking=True)
    labels = t.labels[idx.to(t.device, non_blocking=True)] if model.needs_labels else None
    # [B, V, 3, S, S]: views already cut from photographs in the workers; [B, 3, H, W]: cut here.
    batches = images.unbind(1) if images.dim() == 5 else [images] * model.num_views
    with torch.no_grad():
        views = [t.augment(batch).contiguous(memory_format=t.memory_format) for batch in batches]
    with t.autocast:
        out = t.net(*views, labels=labels)
    loss_i = out["loss"].float()
    # Read on logging steps and at the epoch's end, before the pruner validates what it buffered.
    torch.logical_or(diverged, ~torch.isfinite(loss_i).all(), out=diverged)
    signals = {name: value.detach() for name, value in out.items() if name != "loss"}
    t0 = time.perf_counter()
    weights = pruner.update(idx, loss=loss_i.detach(), **signals)
    t.state.timers["pruner_time"] += time.perf_counter() - t0
    loss = (weights * loss_i).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def check_finite(t: Trainer, diverged: Tensor, epoch: int, step: int) -> None:
    """Raise ``TrainingDiverged`` if any rank saw a non-finite loss (a host sync)."""
    if distributed.any_rank(diverged):
        last = t.run.last if t.run.last.exists() else "none (diverged in epoch 1)"
        raise TrainingDiverged(f"non-finite loss at epoch {epoch + 1} (seen by step {step}); stopped, "
                               f"the last good checkpoint is {last}")


def train_one_epoch(t: Trainer, epoch: int) -> dict[str, Any]:
    """Select the epoch's kept set, train on it, flush the pruner; returns the epoch's record."""
    cfg, state = t.cfg, t.state
    t0 = time.perf_counter()
    state.pruner.set_epoch(epoch)
    state.timers["pruner_time"] += time.perf_counter() - t0
    state.model.train()
    steps = len(t.loader)
    loss_sum = torch.zeros((), device=t.device)
    diverged = torch.zeros((), dtype=torch.bool, device=t.device)
    seen, t_epoch = 0, time.perf_counter()
    # In a log, no bar: the epoch's line says its loss and speed.
    bar = show_progress(t.loader, f"epoch {epoch + 1}/{cfg.epochs}", unit="batches", enabled=cfg.progress and t.run.is_main,
                        lines=False)
    for i, (idx, images) in enumerate(bar):
        progress = epoch * RESOLUTION + (i * RESOLUTION) // steps
        factor = lr_factor(progress, cfg)
        for group, base in zip(state.optimizer.param_groups, t.base_lrs, strict=True):
            group["lr"] = base * factor
        loss = train_step(t, idx, images, progress / (cfg.epochs * RESOLUTION), diverged)
        loss_sum += loss
        seen += len(idx)
        state.step += 1
        if (i + 1) % cfg.log_every == 0:
            check_finite(t, diverged, epoch, i + 1)
            value = loss.item()
            bar.set_postfix(loss=f"{value:.3f}", img_s=f"{seen * t.world / (time.perf_counter() - t_epoch):.0f}")
            t.sinks.step(state.step, epoch, {"lr": state.optimizer.param_groups[0]["lr"], "loss": value})
    bar.close()
    check_finite(t, diverged, epoch, steps)  # before the pruner takes in the epoch's statistics
    t0 = time.perf_counter()
    state.pruner.flush()  # every rank, before diagnostics and checkpoints
    state.timers["pruner_time"] += time.perf_counter() - t0
    epoch_time = time.perf_counter() - t_epoch
    diagnostics = state.pruner.epoch_diagnostics()
    if t.data.junk is not None:  # the junk probe: which share of this epoch's kept set is junk
        diagnostics["junk_kept_fraction"] = float(t.data.junk[state.pruner.kept_indices()].double().mean())
    if t.data.unique_of is not None:  # the redundancy probe: repeats of one image in this epoch's kept set
        diagnostics.update(redundancy_diagnostics(t.data.unique_of, state.pruner.kept_indices()))
    if t.sinks.wants_histograms:
        t.sinks.histogram(state.step, "pruning/count", state.pruner.table.count)
    return {
        "epoch": epoch, "step": state.step, "loss": loss_sum.item() / max(steps, 1),
        "lr": state.optimizer.param_groups[0]["lr"],
        "images_per_s": seen * t.world / epoch_time, "epoch_time_s": epoch_time,
        **{f"pruning/{k}": v for k, v in diagnostics.items()},
    }




def evaluate(t: Trainer, epoch: int) -> dict[str, float]:
    """The monitors (``ssl_emp.eval.monitor``) on rank 0; the other ranks wait for it at their next
    collective. Timed, and kept in the history."""
    if not t.run.is_main:
        return {}
    t0 = time.perf_counter()
    metrics = monitors(t.state.model, t.data, t.cfg, t.device)
    t.state.timers["eval_time"] += time.perf_counter() - t0
    if metrics:
        t.state.history.append({"epoch": epoch, **metrics})
    return metrics


def pretrain(cfg: Config, resume: bool = False, sinks: Sequence[MetricsSink] = ()) -> dict[str, Any]:
    """Pretrain an encoder as configured; returns the summary (also written to summary.json).
    ``sinks``: metrics sinks of the caller's (``ssl_emp.logger.MetricsSink``), beside the run's own."""
    finalize(cfg)
    set_threads(cfg.threads)
    sinks = check_sinks(sinks)  # before the run folder: a bad sink would fail at its first step
    with Run(cfg.output_dir, distributed.is_main()) as run:  # rank 0 holds the folder's lock throughout
        ckpt = open_run(cfg, run, resume)
        t = build(cfg, run)
        fingerprint = data_fingerprint(cfg.data)  # the data, wherever it lies: what --resume compares
        if ckpt is not None:
            check_classes(ckpt, t.data, run.last)  # before the state: a classifier of another size fails there
            check_data(ckpt, cfg, fingerprint, run.last)
            t.state.load_state_dict(ckpt, source=run.last)
            run.truncate_logs(ckpt["epoch"])
        else:
            start_run(cfg, run)
        record_embeddings(t, resumed=ckpt is not None)
        t.sinks = build_sinks(cfg, run, None if ckpt is None else t.state.step, sinks)
        try:
            if ckpt is None:
                _log_epoch(t, {"epoch": -1, "step": 0, **evaluate(t, -1)}, evaluated=True)
            for epoch in range(t.state.epoch + 1, cfg.epochs):
                record = train_one_epoch(t, epoch)
                if cfg.eval.eval_every and (epoch + 1) % cfg.eval.eval_every == 0 or epoch == cfg.epochs - 1:
                    record.update(evaluate(t, epoch))
                _log_epoch(t, record)
                t.state.epoch = epoch
                t.state.diagnostics.append(epoch_diagnostics(record))
                if run.is_main:
                    # The classes: what resume and eval check the data against (labels are indices into them).
                    atomic_torch_save({"config": asdict(cfg), "classes": t.data.train.classes,
                                       "data_fingerprint": fingerprint, **t.state.state_dict()}, run.last)
            return finish(t, fingerprint)
        finally:
            t.sinks.close()


def _log_epoch(t: Trainer, record: dict[str, Any], evaluated: bool = False) -> None:
    """An epoch's record to the sinks, and one line to the terminal. Epoch -1 (before training) is
    logged only if a monitor ran."""
    if record["epoch"] == -1:
        if len(record) > 2:
            t.sinks.epoch(0, record)
            _echo("epoch 0 (before training): " + ", ".join(f"{k} {v:.4f}" for k, v in record.items()
                                                         if k.endswith("top1")), t.run.is_main)
        return
    t.sinks.epoch(record["step"], record)
    _echo(f"epoch {record['epoch'] + 1}/{t.cfg.epochs}: loss {record['loss']:.4f}, {record['images_per_s']:.0f} img/s"
          + "".join(f", {name} {record[name]:.4f}" for name in ("knn_top1", "test_top1") if name in record),
          t.run.is_main)


def finish(t: Trainer, fingerprint: str) -> dict[str, Any]:
    """The run's summary; rank 0 writes final.pt, the pruning table and summary.json."""
    return finish_run(t.run, t.cfg, t.state, t.data, t.world, t.device, fingerprint)


def _echo(message: str, is_main: bool = True) -> None:
    if is_main:
        tqdm.write(message)
