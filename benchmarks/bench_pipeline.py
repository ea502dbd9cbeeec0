"""Throughput of the augmentation pipeline, the trainer's ``train_step`` and feature extraction, for a config.

    python benchmarks/bench_pipeline.py --config configs/digits_simclr.yaml --output benchmarks/results/pipeline_digits.json

Images/s counts source images (each gives two views). Warm-up steps are excluded.

    python benchmarks/bench_pipeline.py --config ... --ab model.channels_last --rounds 10

times ``train_step`` with KEY=true and KEY=false in one process, alternating the two every round
(on a shared or noisy machine the ratio of interleaved medians is what can be trusted).

    python benchmarks/bench_pipeline.py --config configs/cifar10_simclr_cpu.yaml --ab model.compile --whole-runs

runs whole ``ssl-emp pretrain`` processes instead, KEY=false then KEY=true per round: the wall time
of the process (start-up, data, compile, every epoch, evaluation), the summary's training time and
kNN top-1, and every epoch's time. From the epoch times: the one-off cost of KEY=true (its first
epoch minus its median epoch, less the same difference for KEY=false), the saving per later epoch,
and the break-even run length in epochs. This is what decides ``model.compile``: a step that is
faster once compiled does not pay if the run is too short to earn back the compile time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ssl_emp.augment import eval_transform
from ssl_emp.config import load_config
from ssl_emp.data import Labelled
from ssl_emp.eval import extract_features
from ssl_emp.run.folder import Run
from ssl_emp.run.layout import RunLayout
from ssl_emp.runtime import machine, versions
from ssl_emp.train import build, train_step


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


def _trainer(cfg_path: str | None, overrides: list[str]) -> tuple[Any, Callable[[], None]]:
    """A built trainer for the config and a closure running one real ``train_step`` on a fixed batch."""
    cfg = load_config(cfg_path, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        cfg.output_dir = tmp  # build writes nothing; the Run is only the trainer's output handle
        t = build(cfg, Run(tmp, is_main=False))
    t.state.model.train()
    t.state.pruner.set_epoch(0)
    b = cfg.optim.batch_size
    idx, batch = torch.arange(b), t.data.train.images[:b].to(t.device)
    diverged = torch.zeros((), dtype=torch.bool, device=t.device)

    def step() -> None:  # the trainer's own step: views, forward, pruner weights, backward, update
        train_step(t, idx, batch, 0.0, diverged)

    return t, step


def ab(args: argparse.Namespace, overrides: list[str]) -> dict[str, Any]:
    """Interleaved A/B of ``train_step`` with ``args.ab`` true vs false; median seconds per step."""
    runs = {flag: _trainer(args.config, [*overrides, f"{args.ab}={flag}"]) for flag in ("true", "false")}
    times: dict[str, list[float]] = {"true": [], "false": []}
    for _ in range(args.rounds):
        for flag, (t, step) in runs.items():
            times[flag].append(_timed(step, args.repeats, 1, t.device))
    median = {flag: statistics.median(v) for flag, v in times.items()}
    result = {"key": args.ab, "overrides": overrides, "rounds": args.rounds, "repeats": args.repeats,
              "seconds_per_step": times, "median_true": median["true"], "median_false": median["false"],
              "speedup_true_over_false": median["false"] / median["true"], "machine": machine()}
    print(f"{args.ab}: true {median['true'] * 1e3:.1f} ms/step, false {median['false'] * 1e3:.1f} ms/step, "
          f"speed-up {result['speedup_true_over_false']:.2f}x (median of {args.rounds} interleaved rounds)")
    return result


def _whole_run(cfg_path: str, overrides: list[str]) -> dict[str, Any]:
    """One ``ssl-emp pretrain`` process: its wall time, summary figures and epoch times."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "ssl_emp", "pretrain", "--config", cfg_path, "--output-dir", tmp, "--no-progress",
               *[arg for item in overrides for arg in ("--set", item)]]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"bench_pipeline: pretrain failed: {proc.stderr.strip().splitlines()[-1]}")
        layout = RunLayout(tmp)
        summary = json.loads(layout.summary.read_text())
        epochs = [json.loads(line)["epoch_time_s"] for line in layout.metrics.read_text().splitlines()
                  if json.loads(line)["epoch"] >= 0]
    return {"process_wall_s": wall, "train_time_s": summary["train_time_s"], "eval_time_s": summary["eval_time_s"],
            "knn_top1": summary["knn_top1"], "epoch_times_s": epochs}


def whole_runs(args: argparse.Namespace, overrides: list[str]) -> dict[str, Any]:
    """Interleaved whole runs with ``args.ab`` false and true; the one-off cost, saving per epoch
    and break-even length of KEY=true."""
    runs: dict[str, list[dict[str, Any]]] = {"false": [], "true": []}
    for r in range(args.rounds):
        for flag in runs:
            runs[flag].append(_whole_run(args.config, [*overrides, f"{args.ab}={flag}"]))
            one = runs[flag][-1]
            print(f"round {r + 1} {args.ab}={flag}: {one['process_wall_s']:.0f} s in all, "
                  f"first epoch {one['epoch_times_s'][0]:.1f} s, median epoch "
                  f"{statistics.median(one['epoch_times_s']):.1f} s, kNN {one['knn_top1']:.4f}", flush=True)
    # Per flag, over rounds: the median epoch after the first, and the first epoch's excess over it.
    later = {f: statistics.median([e for run in v for e in run["epoch_times_s"][1:]]) for f, v in runs.items()}
    first_excess = {f: statistics.median([run["epoch_times_s"][0] for run in v]) - later[f] for f, v in runs.items()}
    one_off = first_excess["true"] - first_excess["false"]
    saving = later["false"] - later["true"]
    wall = {f: statistics.median([run["process_wall_s"] for run in v]) for f, v in runs.items()}
    epochs = len(runs["true"][0]["epoch_times_s"])
    result = {
        "key": args.ab, "config": args.config, "overrides": overrides, "rounds": args.rounds, "epochs": epochs,
        "runs": runs, "median_process_wall_s": wall, "median_later_epoch_s": later,
        "one_off_cost_s": one_off, "saving_per_epoch_s": saving,
        "break_even_epochs": one_off / saving if saving > 0 else None,
        "pays_at_config_length": wall["true"] < wall["false"], "machine": machine(), "versions": versions(),
    }
    print(f"{args.ab}: whole run {wall['false']:.0f} s (false) vs {wall['true']:.0f} s (true) over {epochs} epochs; "
          f"one-off {one_off:.0f} s, saving {saving:.2f} s/epoch, break-even "
          + (f"{result['break_even_epochs']:.1f} epochs" if saving > 0 else "never (no saving per epoch)"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config")
    parser.add_argument("--data-dir")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-features", action="store_true", help="time only the augmentation and train_step")
    parser.add_argument("--ab", metavar="KEY", help="boolean config key to A/B (interleaved), e.g. model.channels_last")
    parser.add_argument("--rounds", type=int, default=10, help="A/B rounds")
    parser.add_argument("--whole-runs", action="store_true", help="with --ab: whole pretrain runs, compile time included")
    parser.add_argument("--output")
    args = parser.parse_args()
    overrides = args.overrides + ([f"data.data_dir={args.data_dir}"] if args.data_dir else [])
    if args.ab and args.whole_runs:
        if not args.config:
            parser.error("--whole-runs needs --config")
        _write(whole_runs(args, overrides), args.output)
        return
    if args.ab:
        _write(ab(args, overrides), args.output)
        return
    _write(throughput(args, overrides), args.output)


def throughput(args: argparse.Namespace, overrides: list[str]) -> dict[str, Any]:
    """Images/s of the view pipeline alone, the trainer's whole ``train_step`` and feature extraction."""
    t, full_step = _trainer(args.config, overrides)
    cfg, device, model, train = t.cfg, t.device, t.state.model, t.data.train
    b = cfg.optim.batch_size
    batch = train.images[:b].to(device)

    def aug_only() -> None:
        with torch.no_grad():
            for _ in range(model.num_views):
                t.augment(batch).contiguous(memory_format=t.memory_format)

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
    return result


def _write(result: dict[str, Any], output: str | None) -> None:
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
