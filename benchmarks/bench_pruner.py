"""Benchmark DynamicPruner overhead: update() per batch, flush() and set_epoch() per epoch.

Simulated per-sample statistics (no model): the table is first warmed through a few epochs so the
selection runs on mostly seen samples, then each timed epoch measures set_epoch(), the first
``--updates`` update() calls of ``--batch-size`` samples (buffered, no host sync) and the
end-of-epoch flush() that folds the whole epoch into the table. Prints a markdown table;
``--output`` also writes JSON.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_pruner.py --sizes 50000 1281167 --output bench.json

Methods: EMP (arXiv 2408.16031), Raju et al. baselines (arXiv 2111.12621), InfoBatch
(arXiv 2303.04947).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from ssl_emp.pruning import METHODS, DynamicPruner
from ssl_emp.run.files import atomic_write_text

_FILL_CHUNK = 65536  # untimed warm-up updates go in big chunks to keep the run short


def _stats(idx: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Deterministic pseudo-statistics that change per epoch, so every selection re-ranks.
    loss = ((idx * 7919 + epoch * 104729) % 9973).to(torch.float32) / 9973 * 5 + 0.1
    align = ((idx * 31 + epoch * 17) % 2000).to(torch.float32) / 1000 - 1
    return loss, align


def bench_one(n: int, method: str, rate: float, batch: int, updates: int, timed_epochs: int) -> dict:
    rate = 0.0 if method == "full" else rate
    # Enough warm-up epochs for fixed-K methods to have seen every sample once.
    warm = math.ceil(1 / (1 - rate)) if rate < 1 else 1
    pruner = DynamicPruner(num_samples=n, method=method, pruning_rate=rate, epochs=warm + timed_epochs + 8, seed=0)
    select_ms, update_us, flush_ms = [], [], []
    for epoch in range(warm + timed_epochs):
        start = time.perf_counter()
        pruner.set_epoch(epoch)
        elapsed = time.perf_counter() - start
        order = pruner.sampler().indices()
        timed = epoch >= warm
        if timed:
            select_ms.append(elapsed * 1e3)
            for chunk in order[: batch * updates].split(batch):
                loss, align = _stats(chunk, epoch)
                start = time.perf_counter()
                pruner.update(chunk, loss=loss, align=align)
                update_us.append((time.perf_counter() - start) * 1e6)
            order = order[batch * updates :]
        for chunk in order.split(_FILL_CHUNK):
            pruner.update(chunk, *_stats(chunk, epoch))
        start = time.perf_counter()
        pruner.flush()
        if timed:
            flush_ms.append((time.perf_counter() - start) * 1e3)
    kept = pruner.epoch_size()
    update_med = statistics.median(update_us)
    return {
        "num_samples": n,
        "method": method,
        "pruning_rate": rate,
        "kept_last_epoch": kept,
        "achieved_rate": pruner.stats()["achieved_rate"],
        "select_ms_median": statistics.median(select_ms),
        "update_us_median": update_med,
        "update_us_p90": sorted(update_us)[int(0.9 * (len(update_us) - 1))],
        "flush_ms_median": statistics.median(flush_ms),
        "update_s_per_epoch": update_med * 1e-6 * math.ceil(kept / batch) + statistics.median(flush_ms) * 1e-3,
        "batch_size": batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 1_281_167])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--rate", type=float, default=0.7)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--updates", type=int, default=100, help="timed update() calls per epoch")
    parser.add_argument("--timed-epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--output", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    for n in args.sizes:
        for method in args.methods:
            rows.append(bench_one(n, method, args.rate, args.batch_size, args.updates, args.timed_epochs))
            r = rows[-1]
            print(f"# done N={n} {method}: select {r['select_ms_median']:.1f} ms", flush=True)

    print(
        "\n| N | method | target rate | achieved rate | kept | set_epoch ms (median) | update µs/batch (median) | p90 µs "
        "| flush ms/epoch | update + flush s/epoch |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['num_samples']} | {r['method']} | {r['pruning_rate']} | {r['achieved_rate']:.3f} | {r['kept_last_epoch']} | "
            f"{r['select_ms_median']:.1f} | {r['update_us_median']:.0f} | {r['update_us_p90']:.0f} | "
            f"{r['flush_ms_median']:.1f} | {r['update_s_per_epoch']:.2f} |"
        )
    if args.output:
        meta = {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "batch_size": args.batch_size,
        }
        atomic_write_text(args.output, json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
