"""Evaluate a pretraining checkpoint's backbone: the code behind ``ssl-emp eval``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ssl_emp.config import Config, validate
from ssl_emp.data import check_classes, load_data
from ssl_emp.errors import ConfigError
from ssl_emp.eval.knn import bank_limited_k, knn_accuracy
from ssl_emp.eval.linear import linear_probe
from ssl_emp.eval.monitor import bank_and_test_features
from ssl_emp.models import build_backbone, state_dict_mismatch
from ssl_emp.progress import progress_enabled
from ssl_emp.run.checkpoint import checkpoint_config, dtype_mismatch, load_checkpoint
from ssl_emp.run.files import os_error_message, temp_path

# What every result of ``evaluate_checkpoint`` holds: how an earlier evaluation's JSON is recognised.
RESULT_KEYS = ("protocol_name", "top1", "top5", "checkpoint")
_MAX_RESULT_BYTES = 1 << 20  # a result is a few hundred bytes


def backbone_from_checkpoint(path: str, ckpt: dict[str, Any] | None = None) -> tuple[torch.nn.Module, Config]:
    """The backbone of a pretraining checkpoint and the run's config (``ckpt``: the file, if read already)."""
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    cfg = checkpoint_config(ckpt, path)
    backbone = build_backbone(cfg.model.backbone, cfg.model.cifar_stem, **cfg.model.backbone_kwargs)
    if not isinstance(ckpt["model"], dict):
        raise ConfigError(f"checkpoint {path} is not an ssl-emp checkpoint (its model entry is not a state dict)")
    state = {k.removeprefix("backbone."): v for k, v in ckpt["model"].items()
             if isinstance(k, str) and k.startswith("backbone.")}
    problem = state_dict_mismatch(backbone, state) or dtype_mismatch(backbone, state)
    if problem:
        raise ConfigError(f"checkpoint {path} does not match backbone '{cfg.model.backbone}' of its config "
                          f"(model.backbone_kwargs {cfg.model.backbone_kwargs}): {problem}")
    backbone.load_state_dict(state)
    return backbone, cfg


def evaluate_checkpoint(path: str, protocol: str, dataset: str | None = None, data_dir: str | None = None,
                        k: int | None = None, temperature: float | None = None, device: str = "auto",
                        seed: int = 0) -> dict[str, Any]:
    """kNN or linear-probe accuracy of a checkpoint's frozen backbone, with the protocol used.

    ``k`` and ``temperature`` (kNN) default to the run's own ``eval.knn_k`` / ``eval.knn_temperature``.
    """
    from ssl_emp.runtime import resolve_device

    ckpt = load_checkpoint(path)
    backbone, cfg = backbone_from_checkpoint(path, ckpt)
    recorded = {key: ckpt[key] for key in ("classes",) if key in ckpt}  # all of ckpt need not stay in memory
    del ckpt
    k = cfg.eval.knn_k if k is None else k
    temperature = cfg.eval.knn_temperature if temperature is None else temperature
    if dataset is not None:
        cfg.data.dataset, cfg.data.data_dir = dataset, data_dir
    elif data_dir is not None:
        cfg.data.data_dir = data_dir
    cfg.data.train_split = "train"
    # The kNN bank and the probe's training set are the whole labelled split: the kept file only chose
    # what pretraining saw, and it may be gone or made for the run's data, not --dataset's.
    cfg.data.keep_file = None
    validate(cfg)
    dev = resolve_device(device)
    with progress_enabled(cfg.progress):
        data = load_data(cfg.data)
    if dataset is None:  # the run's own data set (perhaps moved: --data-dir), so the classes it was trained on
        check_classes(recorded, data, path, "; pass --dataset to evaluate it on another data set")
    if data.bank is None or data.test is None:
        raise ConfigError(f"data set '{cfg.data.dataset}' has no labelled train and test splits to evaluate on")
    (train_x, train_y), (test_x, test_y) = bank_and_test_features(backbone.to(dev), data, cfg, dev)
    if protocol == "knn":
        k = bank_limited_k(k, len(train_y))  # as the pretrain monitor does
        result = knn_accuracy(train_x, train_y, test_x, test_y, k=k, temperature=temperature)
        protocol_info: dict[str, Any] = {"k": k, "temperature": temperature, "features": "backbone, L2-normalised",
                                         "voting": "similarity-weighted exp(sim/T)", "index": "faiss IndexFlatIP"}
    elif protocol == "linear":
        _check_linear_data(train_y, cfg.data.dataset)
        result = linear_probe(train_x, train_y, test_x, test_y, seed=seed, device=dev)
        protocol_info = result.get("protocol", {})
    else:
        raise ConfigError(f"unknown evaluation protocol '{protocol}' (choose from knn, linear)")
    return {
        "protocol_name": protocol, "top1": result["top1"], "top5": result["top5"], "checkpoint": str(path),
        "dataset": cfg.data.dataset, "num_train": len(train_y), "num_test": len(test_y),
        "feature_dim": train_x.shape[1], "protocol": protocol_info,
    }


def _check_linear_data(labels: torch.Tensor, dataset: str) -> None:
    """The linear probe holds out a part of every class to choose its weight decay: a class of one image has none."""
    if int(torch.bincount(labels).max()) < 2:
        raise ConfigError(f"the linear probe needs at least 2 training images in a class of '{dataset}' (it holds "
                          "out a part of each class to choose its weight decay) and every class has one; "
                          "add training images, or evaluate with `ssl-emp eval knn`")


def check_output(path: str | Path) -> Path:
    """``ssl-emp eval --output``, checked before evaluating: absent or an earlier evaluation's JSON (anything
    else, a checkpoint above all, is never replaced), and writable (a probe file is created and removed)."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError(f"eval --output {path} is a folder; give a file name")
        if path.exists() and not _is_evaluation(path):
            raise ConfigError(f"eval --output {path} exists and is not an earlier evaluation's JSON; "
                              "choose another file name (it is never replaced)")
        path.parent.mkdir(parents=True, exist_ok=True)
        temp_path(path).touch()
        temp_path(path).unlink()
    except OSError as exc:  # a parent that is a file, a name too long, no permission: the --output's fault
        raise ConfigError(os_error_message(exc, path)) from exc
    return path


def _is_evaluation(path: Path) -> bool:
    try:
        if path.stat().st_size > _MAX_RESULT_BYTES:  # a checkpoint, say: not read into memory to find out
            return False
        result = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(result, dict) and all(key in result for key in RESULT_KEYS)
