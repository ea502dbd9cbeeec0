"""Run under ``torchrun --nproc_per_node=2``: a tiny ``emp`` pretrain whose pruner records, per rank,
the kept sets, the indices this rank trained, the per-step (index, loss, align) it fed in, and the
final table. Usage: ddp_pretrain_script.py OUT_DIR RECORD_DIR
"""

import sys

import torch
import torch.distributed as dist

import ssl_emp.train
from ssl_emp.cli import main
from ssl_emp.pruning import DynamicPruner

records = {"kept": [], "served": [], "steps": []}


class RecordingPruner(DynamicPruner):
    def set_epoch(self, epoch):
        super().set_epoch(epoch)
        records["kept"].append(self.kept_indices().clone())
        records["served"].append(torch.tensor(list(iter(self.sampler())), dtype=torch.long))

    def update(self, idx, loss, align=None):
        records["steps"].append((len(records["kept"]) - 1, idx.clone(), loss.clone(), align.clone()))
        return super().update(idx, loss, align)


ssl_emp.train.DynamicPruner = RecordingPruner
out, record_dir = sys.argv[1], sys.argv[2]
code = main([
    "pretrain", "--output-dir", out, "--no-progress", "--epochs", "3", "--method", "emp", "--pruning-rate", "0.5",
    "--set", "data.image_size=16", "--set", "data.train_subset=200", "--set", "eval.eval_every=0",
    "--set", "model.backbone_kwargs.channels=[8,16,32,64]", "--set", "optim.batch_size=32",
    "--set", "model.proj_hidden_dim=64", "--set", "model.proj_out_dim=32",
])
rank = int(__import__("os").environ["RANK"])
torch.save({"code": code, **records}, f"{record_dir}/rank{rank}.pt")
assert not dist.is_initialized(), "the CLI must tear down the process group it started"
sys.exit(code)
