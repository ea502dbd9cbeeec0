"""The monitors a run evaluates during and after training: kNN on backbone features (train split
as the bank, test split as queries) and a supervised model's own classifier on the test split.
``ssl_emp.eval.from_checkpoint`` uses the same feature extraction and kNN on a saved checkpoint."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from ssl_emp.augment import eval_transform
from ssl_emp.config import Config
from ssl_emp.data import DataSplits, Labelled
from ssl_emp.data.datasets import loader_generator
from ssl_emp.eval.features import extract_features
from ssl_emp.eval.knn import bank_limited_k, knn_accuracy


def _loader(split: object, cfg: Config) -> DataLoader:
    return DataLoader(Labelled(split, cfg.data.image_size), batch_size=cfg.eval.batch_size, num_workers=cfg.data.num_workers,
                      generator=loader_generator())


def bank_and_test_features(backbone: nn.Module, data: DataSplits, cfg: Config,
                           device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(features, labels) of the kNN bank and of the test split, through the run's eval transform:
    what the pretrain monitor and ``ssl-emp eval`` both score."""
    transform = eval_transform(cfg.augment, cfg.data.image_size).to(device)
    return [extract_features(backbone, _loader(split, cfg), device=device, transform=transform,
                             progress=f"features of the {what}" if cfg.progress else None)
            for split, what in ((data.bank, "kNN bank"), (data.test, "test split"))]


def knn_monitor(backbone: nn.Module, data: DataSplits, cfg: Config, device: torch.device) -> dict[str, float]:
    """kNN top-1/top-5 of backbone features: train split as the bank, test split as queries."""
    if data.bank is None or data.test is None:
        return {}
    (train_x, train_y), (test_x, test_y) = bank_and_test_features(backbone, data, cfg, device)
    k = bank_limited_k(cfg.eval.knn_k, len(train_y), data.bank)  # the same k as ssl-emp eval knn, said once per run
    result = knn_accuracy(train_x, train_y, test_x, test_y, k=k, temperature=cfg.eval.knn_temperature)
    return {"knn_top1": result["top1"], "knn_top5": result["top5"]}


def classifier_top1(model: nn.Module, data: DataSplits, cfg: Config, device: torch.device) -> dict[str, float]:
    """Top-1 of a model's own classifier (``model.classifier``, supervised runs) on the test split."""
    head = getattr(model, "classifier", None)
    if head is None or data.test is None:
        return {}
    transform = eval_transform(cfg.augment, cfg.data.image_size).to(device)
    logits, labels = extract_features(nn.Sequential(model.backbone, head), _loader(data.test, cfg), device=device,
                                      transform=transform, progress="classifying the test split" if cfg.progress else None)
    return {"test_top1": float((logits.argmax(dim=1) == labels).double().mean())}


def monitors(model: nn.Module, data: DataSplits, cfg: Config, device: torch.device) -> dict[str, float]:
    """Every monitor that applies to ``model`` and ``data``."""
    return {**knn_monitor(model.backbone, data, cfg, device), **classifier_top1(model, data, cfg, device)}
