"""Run under ``torchrun --nproc_per_node=2``: a tiny ``emp`` pretrain whose pruner records, per rank,
the kept sets, the indices this rank trained, the per-step (index, loss, align) it fed in; then the
rank's final parameters and its learning rate. Before training, inside the run's process group, a
SimCLR model with gathered negatives scores fixed views (eval mode): the losses, and the summed
gradient, of this rank's half of the batch. Usage: ddp_pretrain_script.py OUT_DIR RECORD_DIR
"""

import os
import sys
from dataclasses import asdict

import torch
import torch.distributed as dist

import ssl_emp.train
from ssl_emp.cli import main
from ssl_emp.config import ModelConfig
from ssl_emp.models import build_model
from ssl_emp.pruning import DynamicPruner

records = {"kept": [], "served": [], "steps": []}
GATHER_MODEL = ModelConfig(backbone_kwargs={"layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8]},
                           proj_hidden_dim=16, proj_out_dim=8, temperature=0.3)


class RecordingPruner(DynamicPruner):
    def set_epoch(self, epoch):
        super().set_epoch(epoch)
        records["kept"].append(self.kept_indices().clone())
        records["served"].append(torch.tensor(list(iter(self.sampler())), dtype=torch.long))

    def update(self, idx, loss, align=None, **directions):
        records["steps"].append((len(records["kept"]) - 1, idx.clone(), loss.clone(), align.clone()))
        return super().update(idx, loss, align, **directions)


def gathered_losses() -> dict:
    """Per-sample SimCLR losses of this rank's 4 of 8 fixed images against all ranks' projections."""
    rank = dist.get_rank()
    torch.manual_seed(123)
    model = build_model("simclr", GATHER_MODEL, gather_distributed=True).eval()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    views = torch.randn(2, 8, 3, 16, 16)
    out = model(views[0, 4 * rank: 4 * rank + 4], views[1, 4 * rank: 4 * rank + 4])
    out["loss"].sum().backward()
    grad = model.head.layers[-1].weight.grad.clone()
    dist.all_reduce(grad)  # the gradient of the loss summed over both ranks' images
    return {"model_cfg": asdict(GATHER_MODEL), "init": init, "views": views, "loss": out["loss"].detach(), "align": out["align"], "grad": grad}


real_build = ssl_emp.train.build


def build(cfg, run):
    records["gather"] = gathered_losses()
    trainer = real_build(cfg, run)
    records["trainer"] = trainer
    return trainer


ssl_emp.train.DynamicPruner = RecordingPruner
ssl_emp.train.build = build
out, record_dir = sys.argv[1], sys.argv[2]
code = main([
    "pretrain", "--output-dir", out, "--no-progress", "--epochs", "3", "--method", "emp", "--pruning-rate", "0.5",
    "--set", "data.image_size=16", "--set", "data.train_subset=200", "--set", "eval.eval_every=0",
    "--set", "model.backbone_kwargs.channels=[8,16,32,64]", "--set", "optim.batch_size=32",
    "--set", "model.proj_hidden_dim=64", "--set", "model.proj_out_dim=32",
])
trainer = records.pop("trainer")
records["params"] = {k: v.detach().clone() for k, v in trainer.state.model.named_parameters()}
records["base_lr"] = trainer.base_lrs[0]
records["world"] = trainer.world
rank = int(os.environ["RANK"])
torch.save({"code": code, **records}, f"{record_dir}/rank{rank}.pt")
assert not dist.is_initialized(), "the CLI must tear down the process group it started"
sys.exit(code)
