"""The ``two_epochs`` step: 2 epochs of GPU_CONFIG on all of CIFAR-10 through ``ssl_emp.train.pretrain``."""

from __future__ import annotations

import json
import tempfile
from typing import Any

import torch

from . import context
from .context import GPU_CONFIG, ROOT, Context, data_overrides


def two_epoch_overrides(data: str) -> list[str]:
    # The config warms up for 10 of its 200 epochs, longer than this run: warm up over both epochs.
    return [f"device={context.DEVICE}", "epochs=2", "optim.warmup_epochs=2", "progress=false", *data_overrides(data)]


def _record(data: str, summary: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The step's result from the run's summary and its per-epoch metrics."""
    epochs = [r for r in records if r.get("epoch", -1) >= 0]
    return {
        "status": "ok" if summary.get("knn_top1") is not None else "failed", "config": str(GPU_CONFIG.relative_to(ROOT)),
        "overrides": two_epoch_overrides(data),
        "images": summary.get("num_samples"), "epoch_time_s": [round(r["epoch_time_s"], 1) for r in epochs],
        "images_per_s": [round(r["images_per_s"]) for r in epochs], "loss": [round(r["loss"], 4) for r in epochs],
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "knn_top1": summary.get("knn_top1"), "knn_top5": summary.get("knn_top5"),
        "knn_top1_epoch0": summary.get("knn_top1_epoch0"), "wall_time_s": summary.get("wall_time_s"),
        "eval_time_s": summary.get("eval_time_s"),
    }


def step_two_epochs(ctx: Context) -> dict[str, Any]:
    from ssl_emp.config import load_config
    from ssl_emp.run.layout import RunLayout
    from ssl_emp.train import pretrain

    if ctx.data is None or ctx.data.startswith("synthetic:"):
        return {"status": "skipped", "note": "the CIFAR-10 archive was not found (pass --data)"}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(GPU_CONFIG, [*two_epoch_overrides(ctx.data), f"output_dir={tmp}"])
        torch.cuda.reset_peak_memory_stats()
        summary = pretrain(cfg)
        records = [json.loads(line) for line in RunLayout(tmp).metrics.read_text().splitlines() if line.strip()]
    return _record(ctx.data, summary, records)
