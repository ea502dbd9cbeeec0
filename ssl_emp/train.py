"""The pretraining loop: kept indices -> (index, images) -> views on device -> model -> per-sample
loss and pruner signals -> pruner weights -> optimizer step; next epoch's kept set from the pruner.

Single process on CPU or one GPU; several GPUs or nodes when launched by ``torchrun`` (DDP). The
loop knows the model only through the contract in ``ssl_emp.models`` and never reads a device
value back to the host outside logging steps (every ``log_every`` steps) and epoch ends.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from lightly.utils.scheduler import cosine_warmup_schedule
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ssl_emp import distributed
from ssl_emp.augment import eval_transform, view_augmentation
from ssl_emp.checkpoint import load_checkpoint
from ssl_emp.config import Config, config_diff, config_from_dict, finalize, save_config
from ssl_emp.data import DataSplits, Labelled, check_classes, load_data, redundancy_diagnostics
from ssl_emp.errors import ConfigError, TrainingDiverged
from ssl_emp.eval import bank_limited_k, extract_features, knn_accuracy
from ssl_emp.fileio import atomic_torch_save
from ssl_emp.models import build_model
from ssl_emp.pruning import DynamicPruner
from ssl_emp.pruning.sampler import FoldedBatchSampler
from ssl_emp.results import DIAGNOSTIC_KEYS, EPOCH_MEAN_KEYS, REPEATABILITY_KEYS
from ssl_emp.rundir import MARKER_NAME, STEPS_HEADER, Run
from ssl_emp.runtime import build_optimizer, machine, memory_format, resolve_device, versions

# Schedules are functions of the fraction of the run done, in units of 1/RESOLUTION epoch, so a
# pruned run (fewer steps per epoch) still walks its whole LR / momentum schedule over the steps
# it actually takes.
RESOLUTION = 1000


def lr_factor(progress: int, cfg: Config) -> float:
    total = cfg.epochs * RESOLUTION
    warmup = int(cfg.optim.warmup_epochs * RESOLUTION)
    return cosine_warmup_schedule(min(progress, total), total, 1.0, 0.0, warmup, 0.0)


class TrainState:
    """Everything a restart needs: the stateful objects by name, counters, timers, kNN history, RNG."""

    STATEFUL = ("model", "optimizer", "pruner")

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, pruner: DynamicPruner, device: torch.device):
        self.model, self.optimizer, self.pruner, self.device = model, optimizer, pruner, device
        self.epoch = -1  # the last finished epoch
        self.step = 0  # optimizer steps taken (the same count on every rank)
        self.timers = {"eval_time": 0.0, "pruner_time": 0.0}
        self.history: list[dict[str, Any]] = []
        self.diagnostics: list[dict[str, Any]] = []  # per epoch: the pruning diagnostics the summary reports
        self._wall_before, self._t0 = 0.0, time.perf_counter()

    @property
    def wall_time(self) -> float:
        return self._wall_before + time.perf_counter() - self._t0

    def state_dict(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        return {
            **{name: getattr(self, name).state_dict() for name in self.STATEFUL},
            "epoch": self.epoch, "step": self.step, "wall_time": self.wall_time, **self.timers,
            "knn_history": self.history, "diagnostics": self.diagnostics,
            "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(self.device) if cuda else None},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.STATEFUL:
            getattr(self, name).load_state_dict(state[name])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.epoch = state["epoch"]
        self.step = state.get("step", state["pruner"]["optimizer_steps"])  # older checkpoints: no "step"
        self.timers = {name: state[name] for name in self.timers}
        self.history = list(state["knn_history"])
        self.diagnostics = list(state.get("diagnostics", []))  # older checkpoints: none
        self._wall_before, self._t0 = state["wall_time"], time.perf_counter()


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
    loader: DataLoader
    augment: nn.Module
    base_lrs: list[float]
    labels: Tensor | None  # train labels on the device, only for a model that needs them
    autocast: torch.autocast
    memory_format: torch.memory_format


def loader_generator(seed: int = 0) -> torch.Generator:
    """A DataLoader's own generator. Without one, torch draws the workers' base seed from the global
    RNG each time an iterator starts: once per run with persistent workers, once per epoch without
    them, again after a resume. That draw shifts the augmentations' stream, so a run's result would
    depend on ``data.num_workers`` and a resumed run would differ from the uninterrupted one."""
    return torch.Generator().manual_seed(seed)


def build(cfg: Config, run: Run) -> Trainer:
    """Data, model (seeded), optimizer, pruner, loader and view pipeline for ``cfg``."""
    world = distributed.world_size()
    device = resolve_device(cfg.device)
    for key in ("gather_distributed", "channels_last", "compile"):
        if not isinstance(getattr(cfg.model, key), bool):
            raise ConfigError(f"model.{key} must be true or false, got {getattr(cfg.model, key)!r}")
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
    pruner = DynamicPruner(num_samples=n, method=cfg.pruning.method, pruning_rate=cfg.pruning.rate,
                           epochs=cfg.epochs, seed=cfg.seed, objective=model.objective, **cfg.pruning.params)
    if pruner.budget is not None and -(-pruner.budget // world) < 2:
        raise ConfigError(f"pruning.rate {cfg.pruning.rate} keeps {pruner.budget} images: fewer than 2 per rank")
    loader = DataLoader(data.train, batch_sampler=FoldedBatchSampler(pruner.sampler(), cfg.optim.batch_size),
                        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.data.num_workers > 0, generator=loader_generator(cfg.seed))
    return Trainer(
        cfg=cfg, run=run, data=data, device=device, world=world,
        state=TrainState(model, optimizer, pruner, device), net=net, loader=loader,
        augment=view_augmentation(cfg.augment, cfg.data.image_size).to(device),
        base_lrs=[g["lr"] for g in optimizer.param_groups], labels=labels,
        autocast=torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"),
        memory_format=layout,
    )


def train_step(t: Trainer, idx: Tensor, images: Tensor, progress: float, diverged: Tensor) -> Tensor:
    """One optimizer step on a batch; returns the weighted loss (on the device, detached).

    No host sync: ``diverged`` (a device bool) accumulates whether any per-sample loss was not
    finite, and the caller reads it only on logging steps and at the epoch's end.
    """
    model, pruner, optimizer = t.state.model, t.state.pruner, t.state.optimizer
    model.on_train_step(progress)
    images = images.to(t.device, non_blocking=True)
    labels = t.labels[idx.to(t.device, non_blocking=True)] if model.needs_labels else None
    with torch.no_grad():
        views = [t.augment(images).contiguous(memory_format=t.memory_format) for _ in range(model.num_views)]
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
    bar = tqdm(t.loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and t.run.is_main), leave=False)
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
            t.run.log("steps.csv", f"{state.step},{epoch},{state.optimizer.param_groups[0]['lr']:.6g},{value:.6f}")
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
    return {
        "epoch": epoch, "loss": loss_sum.item() / max(steps, 1), "lr": state.optimizer.param_groups[0]["lr"],
        "images_per_s": seen * t.world / epoch_time, "epoch_time_s": epoch_time,
        **{f"pruning/{k}": v for k, v in diagnostics.items()},
    }


def knn_monitor(backbone: nn.Module, data: DataSplits, cfg: Config, device: torch.device) -> dict[str, float]:
    """kNN top-1/top-5 of backbone features: train split as the bank, test split as queries."""
    if data.bank is None or data.test is None:
        return {}
    transform = eval_transform(cfg.augment, cfg.data.image_size).to(device)
    feats = []
    for split in (data.bank, data.test):
        loader = DataLoader(Labelled(split), batch_size=cfg.eval.batch_size, num_workers=cfg.data.num_workers,
                            generator=loader_generator())
        feats.append(extract_features(backbone, loader, device=device, transform=transform))
    (train_x, train_y), (test_x, test_y) = feats
    k = bank_limited_k(cfg.eval.knn_k, len(train_y), data.bank)  # the same k as ssl-emp eval knn, said once per run
    result = knn_accuracy(train_x, train_y, test_x, test_y, k=k, temperature=cfg.eval.knn_temperature)
    return {"knn_top1": result["top1"], "knn_top5": result["top5"]}


def classifier_top1(model: nn.Module, data: DataSplits, cfg: Config, device: torch.device) -> dict[str, float]:
    """Top-1 of a model's own classifier (``model.classifier``, supervised runs) on the test split."""
    head = getattr(model, "classifier", None)
    if head is None or data.test is None:
        return {}
    transform = eval_transform(cfg.augment, cfg.data.image_size).to(device)
    loader = DataLoader(Labelled(data.test), batch_size=cfg.eval.batch_size, num_workers=cfg.data.num_workers,
                        generator=loader_generator())
    logits, labels = extract_features(nn.Sequential(model.backbone, head), loader, device=device, transform=transform)
    return {"test_top1": float((logits.argmax(dim=1) == labels).double().mean())}


def evaluate(t: Trainer, epoch: int) -> dict[str, float]:
    """kNN monitor (and a supervised model's test top-1) on rank 0; the other ranks wait for it at
    their next collective. Timed, and kept in the history."""
    if not t.run.is_main:
        return {}
    t0 = time.perf_counter()
    metrics = knn_monitor(t.state.model.backbone, t.data, t.cfg, t.device)
    metrics.update(classifier_top1(t.state.model, t.data, t.cfg, t.device))
    t.state.timers["eval_time"] += time.perf_counter() - t0
    if metrics:
        t.state.history.append({"epoch": epoch, **metrics})
    return metrics


def pretrain(cfg: Config, resume: bool = False) -> dict[str, Any]:
    """Pretrain an encoder as configured; returns the summary (also written to summary.json)."""
    finalize(cfg)
    with Run(cfg.output_dir, distributed.is_main()) as run:  # rank 0 holds the folder's lock throughout
        ckpt = open_run(cfg, run, resume)
        t = build(cfg, run)
        if ckpt is not None:
            check_classes(ckpt, t.data, run.last)  # before the state: a classifier of another size fails there
            t.state.load_state_dict(ckpt)
            run.truncate_logs(ckpt["epoch"])
        elif run.is_main:
            start_run(t)
        for epoch in range(t.state.epoch + 1, cfg.epochs):
            record = train_one_epoch(t, epoch)
            if cfg.eval.eval_every and (epoch + 1) % cfg.eval.eval_every == 0 or epoch == cfg.epochs - 1:
                record.update(evaluate(t, epoch))
            run.log("metrics.jsonl", json.dumps(record))
            _echo(f"epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f}, {record['images_per_s']:.0f} img/s"
                  + "".join(f", {name} {record[name]:.4f}" for name in ("knn_top1", "test_top1") if name in record),
                  run.is_main)
            t.state.epoch = epoch
            t.state.diagnostics.append({k: record[f"pruning/{k}"] for k in DIAGNOSTIC_KEYS if f"pruning/{k}" in record})
            if run.is_main:
                # The classes: what resume and eval check the data against (labels are indices into them).
                atomic_torch_save({"config": asdict(cfg), "classes": t.data.train.classes, **t.state.state_dict()},
                                  run.last)
        return finish(t)


def open_run(cfg: Config, run: Run, resume: bool) -> dict[str, Any] | None:
    """The last checkpoint when resuming (its config must match ``cfg``); None for a new run."""
    if not resume:
        if run.has_checkpoint():
            raise ConfigError(f"{run.dir} already holds a run; pass --resume to continue it or choose another --output-dir")
        run.check_new()  # before the data is loaded: a folder that is not ours is refused at once
        return None
    if not run.last.is_file():
        started = (run.dir / MARKER_NAME).is_file()
        raise ConfigError(f"no checkpoint to resume in {run.dir}" + (
            " (the run stopped before its first epoch ended); rerun the same command without --resume "
            "to start it again" if started else f" (no {run.last})"))
    ckpt = load_checkpoint(run.last)
    # Where it runs and where it writes may change on resume; nothing that changes what it computes.
    diff = config_diff(asdict(config_from_dict(ckpt["config"])), asdict(cfg), ("device", "progress", "output_dir"))
    if diff:
        raise ConfigError(f"--resume with a config that differs from the checkpoint's: {', '.join(diff)}")
    run.mark()  # a run begun before folders were marked: recognisable from now on
    return ckpt


def start_run(t: Trainer) -> None:
    """A new run's folder (what an interrupted, never-checkpointed start left is cleared first),
    its config, and the evaluation before training."""
    t.run.reset_unstarted()
    save_config(t.cfg, t.run.dir / "config.yaml")
    metrics = evaluate(t, -1)
    if metrics:
        t.run.log("metrics.jsonl", json.dumps({"epoch": -1, **metrics}))
        _echo("epoch 0 (before training): " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.endswith("top1")))
    t.run.log("steps.csv", STEPS_HEADER)


def _last_epoch_signals(state: TrainState) -> dict[str, Any]:
    """Signal repeatability at the last epoch; the junk and redundancy figures averaged over all
    epochs (None when the run did not probe)."""
    last = state.diagnostics[-1] if state.diagnostics else {}
    out = {key: last.get(key) for key in REPEATABILITY_KEYS}
    for key in EPOCH_MEAN_KEYS:
        values = [d[key] for d in state.diagnostics if key in d]
        out[key] = sum(values) / len(values) if values else None
    return out


def finish(t: Trainer) -> dict[str, Any]:
    """The run's summary; rank 0 writes final.pt, the pruning table and summary.json."""
    cfg, state = t.cfg, t.state
    wall = state.wall_time
    stats = state.pruner.stats()
    history = state.history
    final = history[-1] if history else {}
    summary = {
        "knn_top1": final.get("knn_top1"), "knn_top5": final.get("knn_top5"), "test_top1": final.get("test_top1"),
        "knn_top1_epoch0": history[0]["knn_top1"] if history and history[0]["epoch"] == -1 else None,
        "wall_time_s": wall, "eval_time_s": state.timers["eval_time"], "train_time_s": wall - state.timers["eval_time"],
        "pruner_time_s": state.timers["pruner_time"], "images_seen": stats["sample_visits"],
        "optimizer_steps": stats["optimizer_steps"], "pruning_method": cfg.pruning.method,
        "target_rate": cfg.pruning.rate, "achieved_rate": stats["achieved_rate"], **_last_epoch_signals(state),
        "knn_split": "validation (held out of train)" if t.data.test_is_validation else "test",
        "num_samples": len(t.data.train), "epochs": cfg.epochs, "algorithm": cfg.algorithm, "world_size": t.world,
        "device": str(t.device), "machine": machine(), "versions": versions(),
    }
    labels = t.data.train.labels
    t.run.write_final(summary, state.pruner, labels.tolist() if labels is not None else None)
    return summary


def _echo(message: str, is_main: bool = True) -> None:
    if is_main:
        tqdm.write(message)
