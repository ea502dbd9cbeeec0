"""Helpers for tests/test_lightning.py, and its 2-process worker (torchrun, gloo, CPU).

Usage: torchrun --standalone --nproc_per_node=2 tests/lightning_ddp_script.py OUT_DIR

Lightning sees torchrun's environment and joins it instead of launching processes itself. Each
rank writes OUT_DIR/rank{r}.pt: its pruner's state_dict, the kept set of every epoch and the
indices its training_step saw.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ssl_emp.lightning import PruningCallback
from ssl_emp.losses import info_nce_per_sample

NUM_IMAGES = 256
BATCH_SIZE = 32


class TwoViewDigits(Dataset):
    """(index, view1, view2) of the first ``n`` 8×8 digits; views fixed per index (deterministic)."""

    def __init__(self, n: int = NUM_IMAGES) -> None:
        x = torch.from_numpy(load_digits().data[:n]).to(torch.float32) / 16.0
        gen = torch.Generator().manual_seed(0)  # a local generator: the global RNG is untouched
        self.view1 = x + 0.1 * torch.randn(x.shape, generator=gen)
        self.view2 = x.flip(1) + 0.1 * torch.randn(x.shape, generator=gen)

    def __len__(self) -> int:
        return self.view1.shape[0]

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        return i, self.view1[i], self.view2[i]


class TinySimCLR(pl.LightningModule):
    """A 64→32→16 MLP encoder trained with the per-sample InfoNCE; records the indices it sees."""

    def __init__(self, callback: PruningCallback, batch_size: int = BATCH_SIZE) -> None:
        super().__init__()
        self.callback = callback
        self.batch_size = batch_size
        gen = torch.Generator().manual_seed(1)
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
        with torch.no_grad():  # deterministic init without touching the global RNG
            for p in self.net.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
        self.seen: dict[int, list[int]] = {}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TwoViewDigits(), batch_sampler=self.callback.batch_sampler(self.batch_size))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        idx, v1, v2 = batch
        self.seen.setdefault(self.current_epoch, []).extend(idx.tolist())
        loss_i, align_i = info_nce_per_sample(self.net(v1), self.net(v2), temperature=0.5)
        weights = self.callback.update(idx, loss=loss_i.detach(), align=align_i)
        return (weights * loss_i).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def trainer(callbacks: list, epochs: int, **kwargs) -> pl.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, enable_checkpointing=False, use_distributed_sampler=False)
    return pl.Trainer(max_epochs=epochs, callbacks=callbacks, **{**defaults, **kwargs})


CONFIG = {"num_samples": NUM_IMAGES, "method": "emp", "pruning_rate": 0.5, "epochs": 3, "seed": 5}


def main(out_dir: Path) -> None:
    callback = PruningCallback(**CONFIG)
    module = TinySimCLR(callback)
    kept: dict[int, torch.Tensor] = {}

    class Record(pl.Callback):  # the kept set each epoch trained on, read while it is current
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            kept[trainer.current_epoch] = callback.pruner.kept_indices()

    fit = trainer([callback, Record()], CONFIG["epochs"], strategy="ddp", devices=2, num_nodes=1)
    fit.fit(module)
    rank = torch.distributed.get_rank()
    torch.save({"state": callback.pruner.state_dict(), "kept": kept, "seen": module.seen,
                "stats": callback.pruner.stats()}, out_dir / f"rank{rank}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
