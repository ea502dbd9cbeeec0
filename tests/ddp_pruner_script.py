"""Worker for tests/test_pruning_ddp.py: a few epochs of ``emp`` under torchrun (gloo, CPU).

Usage: torchrun --standalone --nproc_per_node=2 tests/ddp_pruner_script.py OUT_DIR

Each rank feeds synthetic per-sample statistics (a function of index and epoch only) through a
DataLoader on the pruner's sampler and writes OUT_DIR/rank{r}.pt with its final state_dict, the
per-epoch kept sets and the indices its loader actually served.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ssl_emp.distributed import all_gather_epoch
from ssl_emp.errors import ConfigError
from ssl_emp.pruning import DynamicPruner

# K = ceil(0.3 · 203) = 61, padded to 62: 31 samples per rank each epoch.
CONFIG = {
    "num_samples": 203,
    "method": "emp",
    "pruning_rate": 0.7,
    "epochs": 5,
    "seed": 3,
    "rho": 0.8,
    "epsilon": 0.2,
}
# Different batch sizes per rank (8: 8,8,8,7; 10: 10,10,10,1) exercise the padded all-gather,
# while both ranks still take ceil(31 / b) = 4 steps, so the collectives line up.
BATCH_SIZES = (8, 10)


def synthetic_stats(idx: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic per-sample (loss, align) that depend only on (index, epoch)."""
    idx = idx.to(torch.int64)
    loss = ((idx * 7919 + epoch * 104729) % 997).to(torch.float32) / 997 * 3 + 0.1
    align = ((idx * 31 + epoch * 17) % 200).to(torch.float32) / 100 - 1
    return loss, align


def uneven_rows(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank r buffers r + 2 steps of sizes r + 1, r + 2, ...; rows are (rank, step, position)."""
    sizes = torch.tensor([step + 1 + rank for step in range(rank + 2)])
    rows = [[rank, step, pos] for step, size in enumerate(sizes.tolist()) for pos in range(size)]
    return sizes, torch.tensor(rows, dtype=torch.float64)


def main(out_dir: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    pruner = DynamicPruner(**CONFIG)
    loader = DataLoader(torch.arange(CONFIG["num_samples"]), batch_size=BATCH_SIZES[rank], sampler=pruner.sampler())
    kept, served, refused = [], [], ""
    for epoch in range(CONFIG["epochs"]):
        pruner.set_epoch(epoch)
        kept.append(pruner.kept_indices())
        batches = []
        for idx in loader:
            loss, align = synthetic_stats(idx, epoch)
            weights = pruner.update(idx, loss=loss, align=align)
            assert bool((weights == 1).all())
            batches.append(idx)
        if epoch == 0:
            try:  # only rank 0 checkpoints, so a collective here would hang: it must refuse
                pruner.state_dict()
            except ConfigError as exc:
                refused = str(exc)
        pruner.flush()  # a collective: every rank folds the epoch's buffered updates in
        served.append(torch.cat(batches))
    record = {"state": pruner.state_dict(), "kept": kept, "served": served, "stats": pruner.stats(),
              "refused": refused, "gathered": all_gather_epoch(*uneven_rows(rank))}
    torch.save(record, out_dir / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
