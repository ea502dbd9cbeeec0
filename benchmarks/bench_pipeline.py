"""Throughput of the augmentation pipeline, one training step and feature extraction, for a config.

    python benchmarks/bench_pipeline.py --config configs/digits_simclr.yaml --output benchmarks/results/pipeline_digits.json

Images/s counts source images (each gives two views). Warm-up steps are excluded.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ssl_emp.augment import eval_transform, view_augmentation
from ssl_emp.config import load_config
from ssl_emp.data import Labelled, load_data
from ssl_emp.eval import extract_features
from ssl_emp.models import build_model
from ssl_emp.train import TIMM_OPT, machine, resolve_device, versions


def _timed(fn, repeats: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config")
    parser.add_argument("--data-dir")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output")
    args = parser.parse_args()
    overrides = args.overrides + ([f"data.data_dir={args.data_dir}"] if args.data_dir else [])
    cfg = load_config(args.config, overrides)
    import timm.optim

    device = resolve_device(cfg.device)
    torch.manual_seed(0)
    train = load_data(cfg.data).train
    batch = train.images[: cfg.optim.batch_size].to(device)
    augment = view_augmentation(cfg.augment, cfg.data.image_size).to(device)
    model = build_model(cfg.algorithm, cfg.model).to(device).train()
    optimizer = timm.optim.create_optimizer_v2(model, opt=TIMM_OPT[cfg.optim.name], lr=1e-3,
                                               weight_decay=cfg.optim.weight_decay)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    views = (augment(batch), augment(batch))

    def aug_only() -> None:
        with torch.no_grad():
            augment(batch), augment(batch)

    def model_step() -> None:
        with autocast:
            loss, _ = model(*views)
        optimizer.zero_grad(set_to_none=True)
        loss.float().mean().backward()
        optimizer.step()

    def full_step() -> None:
        with torch.no_grad():
            v1, v2 = augment(batch), augment(batch)
        with autocast:
            loss, _ = model(v1, v2)
        optimizer.zero_grad(set_to_none=True)
        loss.float().mean().backward()
        optimizer.step()

    n_feat = min(len(train), 4096)
    feat_loader = DataLoader(Labelled(train), batch_size=cfg.eval.batch_size,
                             sampler=range(n_feat))  # the first n_feat images, in order
    transform = eval_transform(cfg.augment, cfg.data.image_size).to(device)

    def features() -> None:
        extract_features(model.backbone, feat_loader, device=device, transform=transform)

    b = cfg.optim.batch_size
    result = {
        "config": args.config or "embedded default (digits, SimCLR)",
        "overrides": overrides,
        "batch_size": b,
        "image_size": cfg.data.image_size,
        "backbone": cfg.model.backbone,
        "backbone_kwargs": cfg.model.backbone_kwargs,
        "augment_images_per_s": b / _timed(aug_only, args.repeats, 2, device),
        "model_step_images_per_s": b / _timed(model_step, args.repeats, 2, device),
        "train_step_images_per_s": b / _timed(full_step, args.repeats, 2, device),
        "feature_extraction_images_per_s": n_feat / _timed(features, 2, 1, device),
        "feature_extraction_batch_size": cfg.eval.batch_size,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "machine": machine(),
        "versions": versions(),
    }
    print(f"| {result['config']} | batch {b} @ {cfg.data.image_size}px | augment {result['augment_images_per_s']:.0f} img/s "
          f"| model step {result['model_step_images_per_s']:.0f} img/s | train step {result['train_step_images_per_s']:.0f} img/s "
          f"| features {result['feature_extraction_images_per_s']:.0f} img/s |")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
