"""Worker for tests/test_scan_run.py: SCAN through its warm-up, probe and pruning epochs under torchrun
(gloo, CPU).

Usage: torchrun --standalone --nproc_per_node=2 tests/ddp_scan_script.py OUT_DIR

Each rank feeds the synthetic two-direction losses of tests/scan_reference.py (a function of index
and epoch only) through a DataLoader on the pruner's sampler and writes OUT_DIR/rank{r}.pt with the
batches it served, the per-epoch kept sets, the candidates after each epoch and its final state.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ssl_emp.pruning import DynamicPruner
from tests.scan_reference import direction_stats  # the repository root is on PYTHONPATH (the test sets it)

# T = 2: epochs 0-2 warm up (the loss falls 40 %, then 17 % < τ = 0.3: w = 3), probe 3, prune 4-5,
# probe 6, prune 7.
CONFIG = {"num_samples": 203, "method": "scan", "epochs": 8, "seed": 3, "scan_cycle": 2,
          "scan_rho_max": 0.3, "scan_rho_min": 0.4}
SCALES = (1.0, 0.6, 0.5, 0.45, 0.44, 0.43, 0.42, 0.41)
# Different batch sizes per rank: in a full epoch (102 samples each) rank 0 takes 13 steps and
# rank 1 takes 11, so the last steps hold one rank's batch only.
BATCH_SIZES = (8, 10)


def main(out_dir: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    pruner = DynamicPruner(**CONFIG)
    loader = DataLoader(torch.arange(CONFIG["num_samples"]), batch_size=BATCH_SIZES[rank], sampler=pruner.sampler())
    kept, served, candidates = [], [], []
    for epoch in range(CONFIG["epochs"]):
        pruner.set_epoch(epoch)
        kept.append(pruner.kept_indices())
        batches = []
        for idx in loader:
            l12, l21 = direction_stats(idx, epoch, SCALES[epoch])
            pruner.update(idx, loss=0.5 * (l12 + l21), align=torch.zeros_like(l12), loss_12=l12, loss_21=l21)
            batches.append((idx, l12, l21))
        pruner.flush()
        served.append(batches)
        candidates.append(pruner.method_state.candidates.clone())
    record = {"state": pruner.state_dict(), "kept": kept, "served": served, "candidates": candidates,
              "stats": pruner.stats()}
    torch.save(record, out_dir / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
