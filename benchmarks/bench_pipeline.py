"""Throughput of the augmentation pipeline, the trainer's ``train_step`` and feature extraction, for a config.

    python benchmarks/bench_pipeline.py --config configs/digits_simclr.yaml --output benchmarks/results/pipeline_digits.json

Images/s counts source images (each gives two views). Warm-up steps are excluded.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ssl_emp.augment import eval_transform
from ssl_emp.config import load_config
from ssl_emp.data import Labelled
from ssl_emp.eval import extract_features
from ssl_emp.runtime import machine, versions
from ssl_emp.train import Run, build, train_step


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
    parser.add_argument("--no-features", action="store_true", help="time only the augmentation and train_step")
    parser.add_argument("--output")
    args = parser.parse_args()
    overrides = args.overrides + ([f"data.data_dir={args.data_dir}"] if args.data_dir else [])
    cfg = load_config(args.config, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        cfg.output_dir = tmp  # build writes nothing; the Run is only the trainer's output handle
        t = build(cfg, Run(tmp, is_main=False))
    device, model, train = t.device, t.state.model.train(), t.data.train
    t.state.pruner.set_epoch(0)
    b = cfg.optim.batch_size
    idx, batch = torch.arange(b), train.images[:b].to(device)
    diverged = torch.zeros((), dtype=torch.bool, device=device)

    def aug_only() -> None:
        with torch.no_grad():
            for _ in range(model.num_views):
                t.augment(batch).contiguous(memory_format=t.memory_format)

    def full_step() -> None:  # the trainer's own step: views, forward, pruner weights, backward, update
        train_step(t, idx, batch, 0.0, diverged)

    n_feat = min(len(train), 4096)
    feat_loader = DataLoader(Labelled(train), batch_size=cfg.eval.batch_size,
                             sampler=range(n_feat))  # the first n_feat images, in order
    transform = eval_transform(cfg.augment, cfg.data.image_size).to(device)

    def features() -> None:
        extract_features(model.backbone, feat_loader, device=device, transform=transform)

    result = {
        "config": args.config or "embedded default (digits, SimCLR)",
        "overrides": overrides,
        "batch_size": b,
        "image_size": cfg.data.image_size,
        "backbone": cfg.model.backbone,
        "backbone_kwargs": cfg.model.backbone_kwargs,
        "channels_last": cfg.model.channels_last,
        "compile": cfg.model.compile,
        "augment_images_per_s": b / _timed(aug_only, args.repeats, 2, device),
        "train_step_images_per_s": b / _timed(full_step, args.repeats, 2, device),
        "feature_extraction_images_per_s": None if args.no_features else n_feat / _timed(features, 2, 1, device),
        "feature_extraction_batch_size": cfg.eval.batch_size,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "machine": machine(),
        "versions": versions(),
    }
    print(f"| {result['config']} | batch {b} @ {cfg.data.image_size}px | augment {result['augment_images_per_s']:.0f} img/s "
          f"| train step {result['train_step_images_per_s']:.0f} img/s "
          f"| features {result['feature_extraction_images_per_s'] or 0:.0f} img/s |")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
